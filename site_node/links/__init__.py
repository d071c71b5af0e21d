"""The site's links to the rest of the province: etcd membership, the central leader's address,
the live state stream and routing questions to central, customer look-ups."""
