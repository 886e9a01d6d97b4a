"""The status page the function app serves at ``/api/admin/ui`` (functions/admin.py).

``data.py`` gathers what the page shows from the store (shared.sync.status plus each mailbox's
settings and last audit entries); ``page.py`` renders it as one HTML document whose CSS and
JavaScript (``assets.py``) are inline under a per-response nonce: nothing is loaded from anywhere.
"""

from shared.admin_ui.data import MailboxView, StatusPageData, status_page_data
from shared.admin_ui.page import CSP, render_status_page

__all__ = ["CSP", "MailboxView", "StatusPageData", "render_status_page", "status_page_data"]
