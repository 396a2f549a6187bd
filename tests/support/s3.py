"""Small S3 client for the archive tests, against the S3-compatible server (moto) they start.

Usage: s3.py <endpoint> make-bucket <bucket>
       s3.py <endpoint> list <bucket> <prefix>          prints the keys as a JSON list
       s3.py <endpoint> download <bucket> <prefix> <dir> copies every object under <prefix>
       s3.py <endpoint> delete <bucket> <key>
"""

import json
import os
import sys

import boto3


def main():
    endpoint, command, bucket, *rest = sys.argv[1:]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    if command == "make-bucket":
        s3.create_bucket(Bucket=bucket)
        print("[]")
        return
    if command == "delete":
        s3.delete_object(Bucket=bucket, Key=rest[0])
        print("[]")
        return
    prefix = rest[0]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    if command == "download":
        for key in keys:
            path = os.path.join(rest[1], os.path.relpath(key, prefix))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
    print(json.dumps(keys))


main()
