"""Packaging for lambgw, the S3 gateway for the Lambda storage network."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="lambgw",
    version="0.1.0",
    description="S3-compatible gateway for the Lambda storage network",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[*find_packages(include=["lambgw", "lambgw.*"]), "twisted.plugins"],
    package_data={"lambgw": ["py.typed"], "twisted": ["plugins/lambgw_plugin.py"]},
    install_requires=[
        "twisted>=23.10",
        "treq>=23.11",
        "klein>=23.5",
        "pyOpenSSL>=23.0",
        "service-identity>=23.1",
        "tomli>=2.0",
        "attrs>=23.1",
        "awscrt>=0.20",
        "prometheus_client>=0.17",
    ],
    extras_require={
        "test": [
            "awscli",
            "boto3",
            "s3cmd",
            "minio",
            "hypothesis",
            "moto[server]",
            "mypy",
            "mypy-zope",
            "ruff",
        ],
    },
    entry_points={
        "console_scripts": [
            "lambgw-admin = lambgw.admin:main",
            "storagecli = lambgw.storagecli:main",
        ]
    },
)
