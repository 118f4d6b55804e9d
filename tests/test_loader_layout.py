"""The loader wing's layout: no import circles, no imports hidden in functions, Datasette only under plugin/."""
import ast
import subprocess

from conftest import BIN, ROOT, subprocess_env

PACKAGE = "datasette_configure_asgi"
SOURCE = ROOT / PACKAGE

# The only imports allowed inside functions, each with its reason.
FUNCTION_IMPORTS = {
    # uvicorn is the optional [serve] extra: `check` and wrap() work without it.
    ("datasette_configure_asgi.serve", "serve", "uvicorn"),
    ("datasette_configure_asgi.serve", "serve", "uvicorn.importer"),
    # datasette.app imports every plugin while it loads, so a plugin cannot import it at module top.
    ("datasette_configure_asgi.plugin.commands", "check", "datasette.app"),
}


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def resolve(module, node):
    """The absolute names a from-import or import statement in ``module`` brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module
    # "from pkg import name" imports pkg, and pkg.name too when that is a module.
    return [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]


def module_level_imports(module):
    """Imports that run when the module is imported (top level, and inside top-level try/if blocks)."""
    found = []
    pending = list(ast.parse(MODULES[module].read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(resolve(module, node))
        elif isinstance(node, (ast.Try, ast.If)):
            pending.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)
    return found


GRAPH = {module: sorted({name for name in module_level_imports(module) if name in MODULES}) for module in MODULES}


def test_the_wing_has_the_modules_the_architecture_names():
    # A reader finds each concern by its name: Datasette's parts together under plugin/.
    plugin = sorted(name for name in MODULES if name.startswith(f"{PACKAGE}.plugin"))
    assert plugin == [f"{PACKAGE}.plugin", f"{PACKAGE}.plugin.commands", f"{PACKAGE}.plugin.page", f"{PACKAGE}.plugin.state"]


def test_no_import_circle():
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            raise AssertionError("import circle: " + " -> ".join(visiting[visiting.index(module):] + [module]))
        if module in done:
            return
        visiting.append(module)
        for imported in GRAPH[module]:
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


def test_imports_point_downward():
    plugin = f"{PACKAGE}.plugin"
    for module, imported in GRAPH.items():
        if not module.startswith(plugin):
            assert not [name for name in imported if name.startswith(plugin)], f"{module} imports the plugin"
    # The shared state is a leaf of plugin/: the hooks, the page and the command import it, never the reverse.
    assert not [name for name in GRAPH[f"{plugin}.state"] if name.startswith(plugin)]
    assert f"{plugin}.state" in GRAPH[f"{plugin}.page"] and f"{plugin}.state" in GRAPH[f"{plugin}.commands"]


def test_no_imports_hidden_in_functions_but_the_documented_ones():
    found = set()
    for module, path in MODULES.items():
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        found.update((module, function.name, alias.name) for alias in node.names)
                    elif isinstance(node, ast.ImportFrom):
                        found.add((module, function.name, resolve(module, node)[0]))
    assert found == FUNCTION_IMPORTS


def python(code):
    return subprocess.Popen([str(BIN / "python"), "-c", code], env=subprocess_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_each_module_imports_alone_in_a_fresh_process():
    # Imported first, each plugin module must still leave Datasette with all four hooks registered.
    check_hooks = (
        "\nimport datasette.app\nfrom datasette.plugins import pm\n"
        f"plugin = [p for p in pm.get_plugins() if getattr(p, '__name__', '') == '{PACKAGE}.plugin'][0]\n"
        "print(sorted(h.name for h in pm.get_hookcallers(plugin)))"
    )
    processes = {module: python(f"import {module}" + check_hooks) for module in MODULES if module != f"{PACKAGE}.__main__"}
    for module, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, f"import {module} alone failed:\n{err}"
        assert out.strip() == "['asgi_wrapper', 'register_commands', 'register_routes', 'startup']", module


def test_the_package_root_works_without_datasette():
    code = (
        "import sys\nsys.modules['datasette'] = None\n"
        f"import {PACKAGE}, {PACKAGE}.serve, {PACKAGE}.testing\n"
        "import asgi_test_middlewares\n"
        "async def app(scope, receive, send): pass\n"
        f"wrapped = {PACKAGE}.wrap(app, [{{'class': 'asgi_test_middlewares.AppendHeader', 'args': {{'value': 'x'}}}}])\n"
        "print(type(wrapped).__name__)\n"
        "try:\n"
        f"    import {PACKAGE}.plugin\n"
        "except ImportError as error:\n"
        "    print('plugin needs datasette')\n"
    )
    process = python(code)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.split() == ["AppendHeader", "plugin", "needs", "datasette"]
