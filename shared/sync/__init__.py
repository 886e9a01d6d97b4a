"""The sync engine: neutral model, field maps, policies, pure planner, applier, jobs."""
