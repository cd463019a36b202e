"""twistd plugins: ``twistd lambgw`` (every order a bucket) and ``twistd s3gw`` (one order)."""

from twisted.application.service import ServiceMaker

lambgw = ServiceMaker(
    "lambgw", "lambgw.tap_lambgw", "S3 gateway: every order of the account is a bucket.", "lambgw"
)
s3gw = ServiceMaker(
    "s3gw", "lambgw.tap_s3gw", "S3 gateway: ordinary buckets inside one order.", "s3gw"
)
lambnet = ServiceMaker(
    "lambnet", "lambgw.lambnet.tap", "A Lambda network node serving a store over HTTP.", "lambnet"
)
