"""HTML pages in Vietnamese (English on request): one blueprint per feature, as the API has one module per feature.

Each module exposes ``bp``; :data:`BLUEPRINTS` lists them in the order the app factory
registers them. What they share (the login check, the clock, local time, whether a
receiver is online, the scope of a query) lives in :mod:`controller.pages.common`;
a page module imports that module and no other page module, and none imports the API.
"""

from __future__ import annotations

from flask import Blueprint

from controller.pages import admin, alerts, bulletins, clusters, errors, faults, login, overview, programme, reports

BLUEPRINTS: tuple[Blueprint, ...] = (login.bp, overview.bp, bulletins.bp, programme.bp, clusters.bp, faults.bp,
                                     reports.bp, alerts.bp, admin.bp, errors.bp)
