"""The approval queue: proposals, four-eyes decisions and exactly-once execution through domain services."""
