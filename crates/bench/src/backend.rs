//! The backends the suite runs its workloads in, side by side: native (a host process),
//! cellvisor's container and microVM domains, and the peers runc and crun. A closed set: an
//! enum, named in reports as `--backends` spells it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{vm, Error, Result};

/// What a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The workload as a plain host process (chrooted into the same root).
    Native,
    /// A cellvisor container domain (this project's OCI runtime).
    Container,
    /// A cellvisor microVM domain: its VMM jailed in a container domain.
    Microvm,
    Runc,
    Crun,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Native,
        Kind::Container,
        Kind::Microvm,
        Kind::Runc,
        Kind::Crun,
    ];

    /// As `--backends` and the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Container => "container",
            Kind::Microvm => "microvm",
            Kind::Runc => "runc",
            Kind::Crun => "crun",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::Msg(format!(
                    "--backends: unknown backend {s:?} (native, container, microvm, runc, crun)"
                ))
            })
    }
}

/// One way to run the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    #[serde(rename = "name")]
    pub kind: Kind,
    /// The OCI runtime (none for native; cellvisor for a microVM, whose VMM it jails).
    pub runtime: Option<PathBuf>,
    pub version: String,
    /// What a microvm backend boots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<vm::Guest>,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The workload as a host process.
    pub fn native() -> Backend {
        Backend {
            kind: Kind::Native,
            runtime: None,
            version: String::new(),
            guest: None,
        }
    }
}

/// The backends named (native first, always), or why one cannot run. `guest` is what the
/// microvm backend boots (`--kernel`, `--initrd`).
pub fn backends(
    names: &[String],
    cellvisor: &Path,
    guest: Option<vm::Guest>,
) -> Result<Vec<Backend>> {
    let mut out = vec![Backend::native()];
    let cellvisor_rt = || {
        crate::start::runtime("cellvisor", cellvisor)
            .ok_or_else(|| Error::Msg(format!("{}: cannot run", cellvisor.display())))
    };
    for n in names {
        let kind: Kind = n.parse()?;
        let b = match kind {
            Kind::Native => continue,
            Kind::Container => {
                let rt = cellvisor_rt()?;
                Backend {
                    kind,
                    runtime: Some(rt.path),
                    version: rt.version,
                    guest: None,
                }
            }
            Kind::Runc | Kind::Crun => match crate::start::runtime(kind.name(), cellvisor) {
                Some(rt) => Backend {
                    kind,
                    runtime: Some(rt.path),
                    version: rt.version,
                    guest: None,
                },
                None => return Err(Error::Msg(format!("--backends: {n} is not installed"))),
            },
            Kind::Microvm => {
                let g = guest.clone().ok_or_else(|| {
                    Error::Msg(
                        "--backends microvm needs --kernel K --initrd I (scripts/mkinitramfs.sh makes I)"
                            .into(),
                    )
                })?;
                let rt = cellvisor_rt()?;
                let kernel = g.kernel.file_name().unwrap_or_default().to_string_lossy();
                Backend {
                    kind,
                    runtime: Some(rt.path),
                    version: format!("{}, guest {kernel}", rt.version),
                    guest: Some(g),
                }
            }
        };
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_named_as_the_command_line_spells_them() {
        for k in Kind::ALL {
            assert_eq!(k.name().parse::<Kind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        let e = "nosuch".parse::<Kind>().unwrap_err().to_string();
        assert!(e.contains("unknown backend \"nosuch\""), "{e}");
    }
}
