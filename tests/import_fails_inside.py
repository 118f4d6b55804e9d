"""Exists, but its own import fails: the loader must show this error, not call it "not found"."""
import a_dependency_that_is_not_installed  # noqa: F401
