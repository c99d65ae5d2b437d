"""Migrations on SQLite and PostgreSQL, and the configuration layers."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from controller import config as cfg
from controller import create_app, db

from helpers import pg_database

TABLES = {"areas", "receivers", "users", "media", "bulletins", "programme_items", "publications", "events", "faults"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with pg_database() as url:
        yield url


def test_migrations_create_the_schema_and_are_idempotent(database_url):
    db.upgrade(database_url)
    db.upgrade(database_url)  # a second run is a no-op
    engine = create_engine(database_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_api_works_on_each_database(database_url, tmp_path):
    from helpers import basic, make_config, seed_district

    app = create_app(make_config(tmp_path, DATABASE_URL=database_url))
    db.upgrade(database_url)
    seed_district(app)
    try:
        resp = app.test_client().get("/api/v1/areas", headers=basic("op-phu", "pw-op-phu"))
        assert [a["id"] for a in resp.json["areas"]] == ["qd/phu"]
    finally:
        app.extensions["loaxa.engine"].dispose()


def test_config_layers(tmp_path, monkeypatch):
    toml = tmp_path / "loaxa.toml"
    toml.write_text('http_port = 9090\nmax_duration_s = 600\n')
    monkeypatch.setenv("LOAXA_CONFIG", str(toml))
    monkeypatch.setenv("LOAXA_MAX_DURATION_S", "1200")
    app = create_app({"VAR_DIR": str(tmp_path / "var")})
    assert app.config["HTTP_PORT"] == 9090  # from the file
    assert app.config["MAX_DURATION_S"] == 1200  # the environment wins over the file
    assert app.config["DATABASE_URL"].startswith("sqlite:///") and app.config["DATABASE_URL"].endswith("var/loaxa.db")
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600
    app.extensions["loaxa.engine"].dispose()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"HTTP_PORT": "eighty"}, "HTTP_PORT must be an integer"),
    ({"MQTT_URL": "http://broker"}, "MQTT_URL must start with mqtt://"),
    ({"MAX_UPLOAD_BYTES": 0}, "MAX_UPLOAD_BYTES must be positive"),
])
def test_bad_config_is_refused_with_the_setting_named(tmp_path, overrides, message):
    with pytest.raises(cfg.ConfigError, match=message):
        create_app({"VAR_DIR": str(tmp_path), **overrides})


def test_missing_config_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LOAXA_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(cfg.ConfigError, match="nope.toml"):
        create_app({"VAR_DIR": str(tmp_path)})


def test_redacted_hides_broker_password():
    out = cfg.redacted({**cfg.DEFAULTS, "MQTT_URL": "mqtt://ctl:s3cret@broker:1883"})
    assert "s3cret" not in str(out)


def test_migrated_schema_matches_the_models(database_url):
    """Every model change has its Alembic revision: autogenerate finds nothing left to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from controller.models import Base

    db.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    # APScheduler's own table is created by the migration but is not one of our models.
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == "apscheduler_jobs")
            and not (d[0] == "remove_index" and d[1].table.name == "apscheduler_jobs")]
    assert diff == []
