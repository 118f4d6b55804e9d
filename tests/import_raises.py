"""Exists, but raises while importing."""
raise RuntimeError("import_raises needs SETTINGS_PATH to be set")
