from setuptools import setup

VERSION = "0.2.0"


def get_long_description():
    with open("README.md", encoding="utf8") as fp:
        return fp.read()


setup(
    name="datasette-configure-asgi",
    description="Configure ASGI middleware around Datasette or any ASGI app, and log every request to SQLite",
    long_description=get_long_description(),
    long_description_content_type="text/markdown",
    version=VERSION,
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=["datasette_configure_asgi", "datasette_configure_asgi.plugin", "asgi_log_to_sqlite", "asgi_log_to_sqlite.cli",
              "asgi_log_to_sqlite.datasette"],
    package_data={
        "datasette_configure_asgi": ["py.typed"],
        "datasette_configure_asgi.plugin": ["templates/*.html"],
        "asgi_log_to_sqlite": ["py.typed"],
        "asgi_log_to_sqlite.datasette": ["templates/*.html", "static/*"],
    },
    entry_points={
        "datasette": [
            "configure_asgi = datasette_configure_asgi.plugin",
            "log_to_sqlite = asgi_log_to_sqlite.datasette",
        ],
        "console_scripts": ["asgi-log-to-sqlite = asgi_log_to_sqlite.cli:cli"],
    },
    install_requires=[
        "click>=8",
        "sqlite-utils>=3.35",
        "tomli>=1.1; python_version < '3.11'",
        # User-agent classes (agents.py): uap-core's rules, with the Rust matcher (ua-parser-rs).
        "ua-parser[regex]>=1.0",
    ],
    extras_require={
        "datasette": ["datasette>=0.65"],
        "serve": ["uvicorn>=0.20", "pyyaml"],
        "test": [
            "pytest>=8",
            "pytest-asyncio>=0.23",
            "httpx>=0.27,<1",
            "asgiref>=3.7",
            "uvicorn>=0.20",
            "httptools",  # benchmarks/logger_http.py serves every variant with it, as 0.1.1's venv has it
            "uvloop",  # benchmarks/logger_http.py --server standard: uvicorn[standard]'s loop
            "pyyaml",
            "starlette",
            "django>=4.2",
            "hypothesis",
            # The dashboard's browser tests, driving Debian's /usr/bin/chromium through its chromedriver.
            "selenium>=4.10",
            "tomli",  # config_file.py's fallback before Python 3.11, tested with tomllib hidden
            # Real third-party middleware the loader is tested against (tests/test_pypi_middleware.py).
            "asgi-cors==1.0.1",
            "brotli-asgi",
            "sentry-sdk",
            "opentelemetry-instrumentation-asgi",
            "opentelemetry-sdk",  # without an SDK OpenTelemetry's middleware records nothing a test can see
            "asgi-csrf",
            "asgi-correlation-id",
            "asgi-request-id",
            "secure",
            "asgi-sage",
            "starlette-context",
        ],
    },
    classifiers=[
        "Framework :: Datasette",
    ],
)
