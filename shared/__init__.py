"""crmsync: the connector itself, independent of the Azure Functions host.

Layout (see README "Architecture"): ``config`` (settings), ``outlook`` (Graph
side), ``crm`` (CRM port + Dataverse adapter), ``store`` (Azure Table Storage),
``sync`` (the engine), ``cli`` (the ``crmsync`` admin command). Nothing in this
package imports ``azure.functions``.
"""

__version__ = "0.1.0"
