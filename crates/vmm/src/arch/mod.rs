//! Architecture-specific pieces; x86_64 now, aarch64 to come beside it.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
