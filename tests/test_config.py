"""Every kind of bad entry is caught before anything is wrapped, all at once, with its location."""
import json
import pathlib

import pytest
from starlette.applications import Starlette

from bad_configs import BAD_CONFIGS, GOOD, K
from datasette_configure_asgi import ConfigError, chain_for, wrap
from datasette_configure_asgi.describe import chain_rows


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


def test_a_value_its_annotation_refuses_is_reported_at_startup():
    # Unchecked, "1000" reached GZip and every page answered 500.
    error = problems_of([GOOD, {"class": "starlette.middleware.gzip.GZipMiddleware", "args": {"minimum_size": "1000"}}])
    assert str(error) == f'{K}[1].args.minimum_size: expected an integer (int), got "1000" (a string)'


def test_a_bare_string_where_a_list_of_strings_is_annotated_is_refused():
    # Unchecked, TrustedHost read "localhost" letter by letter and every page answered 400.
    error = problems_of([{"class": "starlette.middleware.trustedhost.TrustedHostMiddleware", "args": {"allowed_hosts": "localhost"}}])
    assert str(error) == (
        f'{K}[0].args.allowed_hosts: expected a list of strings or null (Sequence[str] | None), got "localhost" (a string)'
    )


def test_every_simple_annotation_is_checked_and_all_problems_come_together(monkeypatch):
    monkeypatch.setenv("DCA_TEST_SIZE", "12")
    args = {
        "size": True, "ratio": 2, "name": 3, "flag": "yes", "hosts": ["a.example", 1], "label": None,
        "mode": "quick", "limit": {"$env": "DCA_TEST_SIZE"}, "callback": "not judged", "untyped": 7,
    }
    error = problems_of([{"class": "asgi_test_middlewares.Annotated", "args": args}])
    assert [str(problem) for problem in error.problems] == [
        f"{K}[0].args.size: expected an integer (int), got True (a boolean)",
        f"{K}[0].args.name: expected a string (str), got 3 (a number)",
        f'{K}[0].args.flag: expected true or false (bool), got "yes" (a string)',
        f"{K}[0].args.hosts[1]: expected a string (str), got 1 (a number)",
        f'{K}[0].args.mode: expected one of "fast", "slow" (Literal[\'fast\', \'slow\']), got "quick" (a string)',
        # A value read from the environment is not quoted: it may be a secret.
        f"{K}[0].args.limit: expected an integer or null (int), got a string (not shown: it may be a secret)",
    ]


def test_values_their_annotations_accept_pass():
    # An int is a fine float; None where the default is None; unannotated and complex parameters are not judged.
    args = {"size": 3, "ratio": 2, "name": "n", "flag": True, "hosts": ["a.example"], "label": None,
            "mode": "slow", "limit": None, "callback": "not judged", "untyped": [1]}
    (entry,) = chain_for([{"class": "asgi_test_middlewares.Annotated", "args": args}]).entries
    assert entry.args == args


@pytest.mark.parametrize(
    "target,suggested",
    [
        ("starlette.middleware.GZipMiddleware", "starlette.middleware.gzip.GZipMiddleware"),
        ("asgi_sage.SageMiddleware", "asgi_sage.middleware.SageMiddleware"),
        ("uvicorn.ProxyHeadersMiddleware", "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware"),
        ("starlette.middleware:GZipMiddleware", "starlette.middleware.gzip:GZipMiddleware"),
    ],
)
def test_a_class_asked_for_in_its_package_points_at_its_submodule(target, suggested):
    error = problems_of([{"class": target}])
    package, _, name = target.replace(":", ".").rpartition(".")
    assert str(error).startswith(f'{K}[0].class: "{package}" has no attribute "{name}"; did you mean "{suggested}"?')
    # The suggestion is a path that works.
    assert chain_for([{"class": suggested}]).entries[0].target == suggested


def test_masking_hides_what_can_hold_a_secret_and_shows_flags_and_numbers():
    args = {"cookie_secure": True, "token_ttl": 3600, "auth_ratio": 0.5, "session_id": None,
            "api_keys": ["k1"], "key_ids": [1, 2], "private": {"x": 1}, "password": ""}
    (entry,) = chain_for([{"class": "asgi_test_middlewares.AcceptsAnything", "args": args}]).entries
    assert entry.shown_args == {"cookie_secure": True, "token_ttl": 3600, "auth_ratio": 0.5, "session_id": None,
                                "api_keys": "***", "key_ids": [1, 2], "private": "***", "password": "***"}


def test_objects_given_from_python_are_shown_as_their_repr():
    # wrap() callers may pass objects; the page and `check` must still be able to show the chain.
    marker = object()
    chain = chain_for([{"class": "asgi_test_middlewares.AcceptsAnything", "args": {"provider": marker, "items": [marker]}}])
    data = chain_rows(chain, "python")
    assert data["middleware"][0]["args"] == {"provider": repr(marker), "items": [repr(marker)]}
    assert json.loads(json.dumps(data)) == data
    assert chain.entries[0].args["provider"] is marker


def test_python_callers_of_wrap_may_pass_tuples_paths_and_objects(tmp_path):
    """wrap() from Python takes what the middleware takes: a tuple for a Sequence[str], a Path for a
    str file, any object; only what a config file could hold is judged against the annotation."""
    app = Starlette()
    wrap(app, [{"class": "starlette.middleware.cors.CORSMiddleware", "args": {"allow_origins": ("https://a.example",)}}])
    wrap(app, [{"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": pathlib.Path(tmp_path / "log.db")}}])
    with pytest.raises(ConfigError, match=r"allow_origins: expected a list of strings"):
        wrap(app, [{"class": "starlette.middleware.cors.CORSMiddleware", "args": {"allow_origins": "https://a.example"}}])
