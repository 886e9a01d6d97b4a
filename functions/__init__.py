"""Azure Functions triggers, one blueprint per trigger family.

Each handler parses its trigger, calls ``shared``, and answers. Business rules
live in ``shared``; this layer stays thin.
"""

import azure.functions as func

from functions.admin import bp as admin_bp
from functions.crm import bp as crm_bp
from functions.health import bp as health_bp
from functions.timers import bp as timers_bp
from functions.webhooks import bp as webhooks_bp
from functions.worker import bp as worker_bp

BLUEPRINTS: tuple[func.Blueprint, ...] = (health_bp, webhooks_bp, worker_bp, timers_bp, admin_bp, crm_bp)
