"""Campaigns: audiences of reachable customers with their recommendations, exported in one job."""
