"""The fleet after the split: tenant databases on several PostgreSQL servers.

- `config`: the servers (`HANDYSHOP_SERVERS`: names, admin URL variables, caps, pins, the connection plan);
- `placement` + `budget` + `plan`: which server takes each shop (least filled by bytes within caps and
  connection budgets, pins), its record, and phase 0's plan of every shop;
- `provisioner`: provisioning on the shop's server (the workflow's provisioner for a fleet);
- `contract` + `schema_changes`: tenant migrations fanned out to every shop, refused where they would break
  a shop's capture or its way back;
- `keys`: re-encrypting the registry under a new key, resumably, logins verified;
- `move`: a tenant database moved to another server under writes, with the cutover's gates and a way back.

Plain Python like the rest of `tenancy`: the Dagster layer is `pipeline/fleet.py`.
"""
