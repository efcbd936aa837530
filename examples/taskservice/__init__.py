"""The task service example: FastAPI, SQLite (aiosqlite) and cachetier; see ``app.py``."""
