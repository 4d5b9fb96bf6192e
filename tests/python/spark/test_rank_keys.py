"""The keys that deal a DataFrame's rows to the barrier stage's ranks
(data.keys_for_partitions) are computed in Python from Spark's Murmur3:
checked here against Spark's own functions.hash and hash partitioning, so
a Spark that hashed differently fails this test instead of sending rows to
the wrong rank."""
from kindling_spark import data


def test_hash_matches_spark(spark):
    from pyspark.sql import functions as F

    values = list(range(-300, 300)) + [2**31 - 1, -2**31, 12345678, -98765432]
    df = spark.createDataFrame([(v,) for v in values], "k int")
    got = {r.k: r.h for r in df.select("k", F.hash("k").alias("h")).collect()}
    wrong = [(v, got[v], data.spark_hash_int(v)) for v in values if got[v] != data.spark_hash_int(v)]
    assert not wrong, f"(value, Spark's hash, ours): {wrong[:5]}"


def test_keys_land_in_their_partitions(spark):
    from pyspark.sql import functions as F

    for n in range(1, 10):
        keys = data.keys_for_partitions(n)
        assert len(keys) == n
        df = spark.createDataFrame([(p, k) for p, k in enumerate(keys) for _ in range(3)], "want int, key int")
        rows = df.repartition(n, "key").select("want", F.spark_partition_id().alias("got")).collect()
        assert len(rows) == 3 * n
        assert all(r.want == r.got for r in rows), f"{n} partitions: {[(r.want, r.got) for r in rows]}"
