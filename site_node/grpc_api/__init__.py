"""The site's gRPC services (trunk ingress, agent desktop CTI, admin, site-to-site peer legs) and
their protobuf conversions: protobuf stops here."""
