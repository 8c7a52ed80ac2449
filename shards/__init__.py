"""The one place that reads and writes webdataset shards and shard-set manifests."""
