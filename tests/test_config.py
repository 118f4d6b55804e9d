"""Every kind of bad entry is caught before anything is wrapped, all at once, with its location."""
import os

import pytest

from bad_configs import BAD_CONFIGS, K
from datasette_configure_asgi import ConfigError, chain_for, wrap


async def app(scope, receive, send):
    pass


def problems_of(entries):
    with pytest.raises(ConfigError) as caught:
        chain_for(entries, K).check()
    return caught.value


@pytest.mark.parametrize("entries,expected", BAD_CONFIGS)
def test_bad_config_is_explained(entries, expected):
    message = str(problems_of(entries))
    for fragment in expected:
        assert fragment in message


def test_every_problem_is_reported_together_in_config_order():
    error = problems_of(
        [
            {"class": "asgi_corz.asgi_cors"},
            {"class": "asgi_test_middlewares.AppendHeader", "args": {"nam": "x"}},
            "not an entry",
            {"class": "asgi_test_middlewares.AppendHeader", "args": {"value": {"$env": "DCA_TEST_UNSET_VARIABLE"}}},
        ]
    )
    assert [p.location for p in error.problems] == [
        f"{K}[0].class",
        f"{K}[1].args.nam",
        f"{K}[2]",
        f"{K}[3].args.value",
    ]
    assert str(error).startswith("4 problems in the middleware config:\n  - ")


def test_factory_return_problems_are_reported_together():
    error = problems_of(
        [{"class": "asgi_test_middlewares.returns_none"}, {"class": "asgi_test_middlewares.returns_number"}]
    )
    assert [p.location for p in error.problems] == [f"{K}[0]", f"{K}[1]"]


@pytest.mark.parametrize(
    "factory,expected",
    [
        ("returns_four_argument_callable", "returned a callable taking 4 arguments (scope, receive, send, extra); expected an ASGI 3 app"),
        ("returns_callable_needing_a_keyword", "returned a callable that also requires the keyword argument(s) flag; expected an ASGI 3 app"),
    ],
    ids=["four-arguments", "required-keyword"],
)
def test_factory_returning_a_callable_that_cannot_be_called_as_asgi3(factory, expected):
    assert str(problems_of([{"class": f"asgi_test_middlewares.{factory}"}])) == f"{K}[0]: asgi_test_middlewares.{factory}(app, **args) {expected} taking (scope, receive, send)"


def test_nothing_is_constructed_when_resolution_fails():
    import asgi_test_middlewares

    before = asgi_test_middlewares.CONSTRUCTED["count"]
    with pytest.raises(ConfigError):
        wrap(app, [{"class": "asgi_test_middlewares.Counting"}, {"class": "nope.nope"}])
    assert asgi_test_middlewares.CONSTRUCTED["count"] == before


def test_disabled_entry_is_not_imported():
    chain = chain_for([{"class": "not_installed_anywhere.Middleware", "enabled": False}])
    assert chain.entries == ()
    assert chain.disabled == ((0, "not_installed_anywhere.Middleware"),)


def test_env_and_file_values_reach_the_middleware(tmp_path, monkeypatch):
    monkeypatch.setenv("DCA_TEST_HEADER_NAME", "x-from-env")
    value_file = tmp_path / "value.txt"
    value_file.write_text("from-file\n")
    chain = chain_for(
        [
            {
                "class": "asgi_test_middlewares.AppendHeader",
                "args": {"name": {"$env": "DCA_TEST_HEADER_NAME"}, "value": {"$file": str(value_file)}},
            }
        ]
    )
    (entry,) = chain.entries
    assert entry.args == {"name": "x-from-env", "value": "from-file"}
    assert entry.shown_args == {"name": "***", "value": "***"}


def test_secret_looking_argument_names_are_masked_for_display():
    chain = chain_for(
        [
            {
                "class": "asgi_test_middlewares.AcceptsAnything",
                "args": {
                    "file": "/tmp/x.db",
                    "api_token": "t0k3n",
                    "nested": {"password": "hunter2", "user": "me"},
                    "secret_key": None,
                },
            }
        ]
    )
    (entry,) = chain.entries
    assert entry.args["api_token"] == "t0k3n"
    assert entry.shown_args == {
        "file": "/tmp/x.db",
        "api_token": "***",
        "nested": {"password": "***", "user": "me"},
        "secret_key": None,
    }


def test_colon_form_and_nested_attribute():
    chain = chain_for([{"class": "asgi_test_middlewares:AppendHeader.__call__", "enabled": False},
                       {"class": "asgi_test_middlewares:AppendHeader", "args": {"value": "colon"}}])
    assert chain.entries[0].target == "asgi_test_middlewares:AppendHeader"
