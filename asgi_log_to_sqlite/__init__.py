"""Log every HTTP request an ASGI app serves to a SQLite database."""
