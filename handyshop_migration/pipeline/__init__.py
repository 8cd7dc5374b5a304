"""The Dagster layer: partitions, resources wrapping `handyshop_migration.tenancy`, one module per phase,
sensors and jobs. No SQL here: everything that touches a database is a call into `tenancy`."""
