# Plugin requirements for packer >= 1.7 (`packer init ami/`, then
# `packer build ami/`). Kept apart from falconet-executor.pkr.hcl because
# packer 1.6.x (Debian 12's package) rejects the required_plugins block:
# with packer 1.6 validate/build falconet-executor.pkr.hcl alone.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
