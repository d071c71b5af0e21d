"""The local province: a cluster of real processes (etcd, central, sites), the etcd and PostgreSQL
servers it and the tests use, the province config generator, fault proxies on a site's links, and
the live status of a running province. Imports nothing else of tools/."""
