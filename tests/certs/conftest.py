"""A root CA and police's agency CA, made once per module: key generation is the slow part."""

import pytest

from certs import CaScope, create_agency_ca, create_ca

TD = "sinergi.test"


@pytest.fixture(scope="module")
def root():
    return create_ca("Root", scope=CaScope(TD))


@pytest.fixture(scope="module")
def police(root):
    return create_agency_ca(root, "police")
