"""The MarketFeed operator: API types -> planner (pure) -> applier -> status."""
