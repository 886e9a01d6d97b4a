"""Read every page of a Graph collection (learn.microsoft.com/graph/paging: follow ``@odata.nextLink``)."""

from __future__ import annotations

from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration

from shared.outlook.errors import graph_errors


async def all_pages(builder: Any, config: RequestConfiguration[Any] | None = None) -> list[Any]:
    """Every item of the collection behind an msgraph-sdk request builder, following next links verbatim."""
    values: list[Any] = []
    with graph_errors():
        page = await builder.get(request_configuration=config)
        while page is not None:
            values.extend(page.value or ())
            if not page.odata_next_link:
                break
            page = await builder.with_url(page.odata_next_link).get()
    return values
