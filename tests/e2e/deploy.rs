//! Checks on the deployment files under deploy/.
