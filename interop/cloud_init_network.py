"""Parses the guest agent's rendered network-config (v2) with the installed cloud-init's own
network-state parser (for cloud-init releases whose `schema` command has no
`--schema-type network-config`) and checks what it understood.

Usage: <cloud-init's python> interop/cloud_init_network.py NETWORK_CONFIG
Run it with the interpreter of cloud-init's shebang: the cloudinit package is a system one.
"""

import sys

import yaml
from cloudinit.net import network_state


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    state = network_state.parse_net_config_data(config, skip_broken=False)
    interfaces = list(state.iter_interfaces())
    assert len(interfaces) == 1, interfaces
    subnets = interfaces[0]["subnets"]
    assert len(subnets) == 1 and subnets[0]["type"] == "static", subnets
    subnet = subnets[0]
    assert subnet["address"] == "10.20.30.40" and subnet["prefix"] == 24, subnet
    assert [r["gateway"] for r in subnet["routes"]] == ["10.20.30.1"], subnet
    assert state.dns_nameservers == ["10.20.0.53", "10.20.0.54"], state.dns_nameservers
    assert state.dns_searchdomains == ["corp.example"], state.dns_searchdomains
    print(f"Valid network-config (cloud-init network state): {path}")


if __name__ == "__main__":
    main(sys.argv[1])
