"""The durable outbox of call records and the shipper that delivers it to central exactly once."""
