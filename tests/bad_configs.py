"""Bad configs, each with the text its error must contain. Shared by the in-process and CLI tests."""
import pytest

K = "datasette-configure-asgi"
GOOD = {"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "ok"}}

BAD_CONFIGS = [
    pytest.param({"class": "asgi_cors.asgi_cors"}, [f'{K}: found an object', "expected a list", "wrap this single entry in [ ]"], id="not-a-list"),
    pytest.param(["asgi_cors.asgi_cors"], [f'{K}[0]: found a string "asgi_cors.asgi_cors", expected an object'], id="entry-not-object"),
    pytest.param([{"args": {}}], [f'{K}[0]: missing required key "class"'], id="missing-class"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "arg": {}}], [f'{K}[0].arg: unknown key; did you mean "args"?'], id="unknown-key"),
    pytest.param([{"class": 12}], [f"{K}[0].class: found a number 12, expected a string"], id="class-not-string"),
    pytest.param([{"class": "asgi_cors"}], [f'{K}[0].class: found "asgi_cors", expected an import path with a module part'], id="class-no-module"),
    pytest.param([{"class": "asgi_corz.asgi_cors"}], [f'{K}[0].class: module "asgi_corz" not found', 'did you mean "asgi_cors"?'], id="module-not-found"),
    pytest.param([{"class": "import_fails_inside.Thing"}], [f'{K}[0].class: module "import_fails_inside" was found but failed to import', "a_dependency_that_is_not_installed"], id="module-import-fails"),
    pytest.param([{"class": "import_raises.Thing"}], [f'{K}[0].class: module "import_raises" was found but failed to import: RuntimeError: import_raises needs SETTINGS_PATH'], id="module-raises"),
    pytest.param([{"class": "asgi_cors.asgi_corz"}], [f'{K}[0].class: "asgi_cors" has no attribute "asgi_corz"; did you mean "asgi_cors"?'], id="attribute-missing"),
    pytest.param([{"class": "asgi_test_middlewares.NOT_CALLABLE"}], [f'{K}[0].class: "asgi_test_middlewares.NOT_CALLABLE" is an object', "expected a middleware class or factory callable"], id="not-callable"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "args": ["allow_all"]}], [f"{K}[0].args: found a list [\'allow_all\'], expected an object of keyword arguments"], id="args-not-object"),
    pytest.param([GOOD, {"class": "asgi_cors.asgi_cors", "args": {"allow_al": True}}], [f'{K}[1].args.allow_al: unknown argument; did you mean "allow_all"? asgi_cors.asgi_cors accepts: allow_all, hosts'], id="args-unknown"),
    pytest.param([{"class": "asgi_test_middlewares.NeedsFile", "args": {"batch_size": 5}}], [f'{K}[0].args: missing required argument "file"; asgi_test_middlewares.NeedsFile accepts: file, batch_size'], id="args-missing-required"),
    pytest.param([{"class": "asgi_test_middlewares.TakesNoApp"}], [f'{K}[0].class: "asgi_test_middlewares.TakesNoApp()" takes no positional argument'], id="takes-no-app"),
    pytest.param([{"class": "asgi_test_middlewares.returns_none"}], [f"{K}[0]: asgi_test_middlewares.returns_none(app, **args) returned None"], id="factory-returns-none"),
    pytest.param([{"class": "asgi_test_middlewares.returns_class"}], [f"{K}[0]: asgi_test_middlewares.returns_class(app, **args) returned the class", "ASGI 2 double-callable"], id="factory-returns-asgi2-class"),
    pytest.param([{"class": "asgi_test_middlewares.returns_single_callable"}], ["returned a callable taking one argument (scope), an ASGI 2 double-callable"], id="factory-returns-asgi2-callable"),
    pytest.param([{"class": "asgi_test_middlewares.returns_two_argument_callable"}], [f"{K}[0]: asgi_test_middlewares.returns_two_argument_callable(app, **args) returned a callable taking 2 arguments (scope, receive); expected an ASGI 3 app taking (scope, receive, send)"], id="factory-returns-two-argument-callable"),
    pytest.param([{"class": "asgi_test_middlewares.returns_number"}], ["returned int 42, which is not callable"], id="factory-returns-number"),
    pytest.param([{"class": "asgi_test_middlewares.raises_on_construction", "args": {"message": "no such file"}}], [f"{K}[0]: asgi_test_middlewares.raises_on_construction(app, **args) raised RuntimeError: no such file"], id="factory-raises"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "args": {"hosts": {"$env": "DCA_TEST_UNSET_VARIABLE"}}}], [f'{K}[0].args.hosts: environment variable "DCA_TEST_UNSET_VARIABLE" is not set'], id="env-missing"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "args": {"hosts": {"$file": "/nonexistent/hosts.txt"}}}], [f'{K}[0].args.hosts: cannot read {{"$file": "/nonexistent/hosts.txt"}}'], id="file-missing"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "enabled": "yes"}], [f'{K}[0].enabled: found a string "yes", expected true or false'], id="enabled-not-bool"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "scopes": ["htp"]}], [f'{K}[0].scopes[0]: unknown scope type "htp"; did you mean "http"?'], id="scope-unknown"),
    pytest.param([{"class": "asgi_cors.asgi_cors", "include_paths": ["api/"]}], [f'{K}[0].include_paths[0]: found "api/", expected a path prefix starting with /'], id="path-no-slash"),
]
