"""Shops are partitions: one key per shop id (as a string), added as shops are registered or sign up."""


import dagster as dg

SHOPS = "shops"
shops_partitions = dg.DynamicPartitionsDefinition(name=SHOPS)


def shop_id(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext) -> int:
    key = context.partition_key
    try:
        return int(key)
    except ValueError:
        raise dg.Failure(f"partition {key!r} is not a shop id; shop partitions are numeric ids.") from None
