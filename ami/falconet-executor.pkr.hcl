# falconet executor image (Packer HCL2).
#
# Validate / build THIS FILE ALONE with Debian's packer 1.6.6:
#   packer validate ami/falconet-executor.pkr.hcl
#   packer build -var region=eu-west-1 ami/falconet-executor.pkr.hcl
# plugins.pkr.hcl holds the required_plugins block for packer >= 1.7
# (`packer init ami/ && packer build ami/`); packer 1.6 rejects that block.
# Written for packer 1.6.6's bundled amazon-ebs builder: no metadata_options
# block (unknown to 1.6.6), and gp3 volumes need explicit throughput/iops.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "AWS region to build in (the AMI is registered there)."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Instance type of the temporary build instance."
}

variable "ami_name" {
  type        = string
  default     = ""
  description = "Name of the resulting AMI; empty = falconet-executor-<UTC timestamp>."
}

variable "source_ami" {
  type        = string
  default     = ""
  description = "Base AMI id. Empty = newest image matching source_ami_name owned by source_ami_owners."
}

variable "source_ami_name" {
  type        = string
  default     = "debian-12-amd64-*"
  description = "Name filter for the base image (Debian's official Debian 12 amd64 images by default)."
}

variable "source_ami_owners" {
  type        = list(string)
  default     = ["136693071363"]
  description = "Owners of the base image (136693071363 = Debian's official cloud images)."
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "Login user of the base image (Debian: admin, Ubuntu: ubuntu, Amazon Linux: ec2-user)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet for the build instance; empty = the default VPC."
}

variable "volume_size" {
  type        = number
  default     = 8
  description = "Root volume size in GiB (raise it when extra_scripts add toolchains)."
}

variable "root_device_name" {
  type        = string
  default     = "/dev/xvda"
  description = "Root device name of the base image (Debian 12 AMIs: /dev/xvda)."
}

variable "falconet_version" {
  type        = string
  default     = "latest"
  description = "What to install: an npm version or range of npm_package (\"0.3.1\", \"latest\"), an https:// tarball URL, or a local .tgz (from `npm pack`) that is uploaded."
  validation {
    condition     = length(var.falconet_version) > 0
    error_message = "The falconet_version must not be empty (use \"latest\", a version, a URL or a .tgz path)."
  }
}

variable "npm_package" {
  type        = string
  default     = "falconet"
  description = "npm package name (a scoped or private-registry name works too)."
}

variable "node_source" {
  type        = string
  default     = "tarball"
  description = "How install.sh gets Node 20: tarball (official nodejs.org, checksum-verified), nodesource, debian or none."
  validation {
    condition     = contains(["tarball", "nodesource", "debian", "none"], var.node_source)
    error_message = "The node_source must be one of tarball, nodesource, debian, none."
  }
}

variable "node_version" {
  type        = string
  default     = "latest-v20.x"
  description = "nodejs.org release directory for node_source=tarball, e.g. v20.20.2 to pin."
}

variable "extra_scripts" {
  type        = list(string)
  default     = []
  description = "Your own provisioning scripts (monitoring agents, toolchains), run as root in order after install.sh. Paths are relative to where packer runs. Each needs a #! line."
}

variable "extra_environment_vars" {
  type        = list(string)
  default     = []
  description = "KEY=VALUE pairs passed to extra_scripts."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for the AMI and its snapshot."
}

locals {
  timestamp = formatdate("YYYYMMDD-hhmmss", timestamp())
  ami_name  = var.ami_name != "" ? var.ami_name : "falconet-executor-${local.timestamp}"
  stage_dir = "/tmp/falconet-ami"

  # packer 1.6.6 has no regex()/regexall() (and can(regex(...)) is then always
  # false), so classify falconet_version with substr/trimsuffix.
  falconet_is_url  = substr(var.falconet_version, 0, 8) == "https://" || substr(var.falconet_version, 0, 7) == "http://"
  falconet_is_file = ! local.falconet_is_url && (trimsuffix(var.falconet_version, ".tgz") != var.falconet_version || trimsuffix(var.falconet_version, ".tar.gz") != var.falconet_version)
  falconet_package = (local.falconet_is_file ? "${local.stage_dir}/${basename(var.falconet_version)}" :
  local.falconet_is_url ? var.falconet_version : "${var.npm_package}@${var.falconet_version}")

  ami_tags = merge({
    "Name"              = local.ami_name
    "falconet:role"     = "executor-image"
    "falconet:package"  = local.falconet_is_file ? basename(var.falconet_version) : local.falconet_package
    "falconet:node"     = "${var.node_source}:${var.node_version}"
    "falconet:built-at" = local.timestamp
  }, var.tags)

  sudo_exec = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
}

source "amazon-ebs" "executor" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = local.ami_name
  subnet_id     = var.subnet_id
  ssh_username  = var.ssh_username

  source_ami = var.source_ami
  dynamic "source_ami_filter" {
    for_each = var.source_ami == "" ? [var.source_ami_name] : []
    content {
      filters = {
        name                = source_ami_filter.value
        architecture        = "x86_64"
        virtualization-type = "hvm"
        root-device-type    = "ebs"
      }
      owners      = var.source_ami_owners
      most_recent = true
    }
  }

  launch_block_device_mappings {
    device_name           = var.root_device_name
    volume_size           = var.volume_size
    volume_type           = "gp3"
    throughput            = 125
    iops                  = 3000
    delete_on_termination = true
  }

  ena_support   = true
  sriov_support = true

  tags          = local.ami_tags
  snapshot_tags = local.ami_tags
  run_tags = {
    "Name"          = "packer-${local.ami_name}"
    "falconet:role" = "image-build"
  }
}

build {
  sources = ["source.amazon-ebs.executor"]

  # Wait for the base image's own first boot (cloud-init, apt timers) to finish.
  provisioner "shell" {
    inline = [
      "if command -v cloud-init >/dev/null; then sudo cloud-init status --wait >/dev/null || true; fi",
      "mkdir -p ${local.stage_dir}",
    ]
  }

  provisioner "file" {
    sources = concat([
      "${path.root}/install.sh",
      "${path.root}/falconet-executor.service",
      "${path.root}/falconet-exit-hook.sh",
      "${path.root}/executor.env",
      "${path.root}/README.md",
    ], local.falconet_is_file ? [var.falconet_version] : [])
    destination = "${local.stage_dir}/"
  }

  provisioner "shell" {
    environment_vars = [
      "FALCONET_PACKAGE=${local.falconet_package}",
      "NODE_SOURCE=${var.node_source}",
      "NODE_VERSION=${var.node_version}",
    ]
    execute_command = local.sudo_exec
    inline          = ["bash ${local.stage_dir}/install.sh"]
  }

  # The operator's scripts, then finalize.sh (checks the image, cleans up).
  # finalize.sh also keeps this list non-empty: a shell provisioner with no
  # scripts fails validation.
  provisioner "shell" {
    environment_vars = var.extra_environment_vars
    execute_command  = local.sudo_exec
    scripts          = concat(var.extra_scripts, ["${path.root}/finalize.sh"])
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      falconet_package = local.falconet_package
    }
  }
}
