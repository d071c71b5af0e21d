"""Consolidated statistics: interval figures from call records, real-time figures from live state."""
