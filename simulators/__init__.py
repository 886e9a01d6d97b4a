"""Local stand-ins for what tests cannot reach: Microsoft Graph, Dataverse, the Functions host.

Never deployed (.funcignore). Nothing here imports ``shared``: a simulator
behaves as Microsoft documents, not as the connector would like.
"""
