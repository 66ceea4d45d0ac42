//! The policy a new tailnet starts with.

/// The allow-all policy, as a new Tailscale tailnet starts with it: every device may reach
/// every other on every port. The server writes this file out when there is no policy file,
/// so the policy in force is always visible and editable. Tailscale's own default file also
/// carries an `ssh` section, which weft does not implement yet, and commented examples; this
/// one keeps the examples as comments.
pub const DEFAULT_POLICY: &str = r#"// weft tailnet policy (HuJSON: JSON with comments and trailing commas).
//
// This is the default policy, the one a new Tailscale tailnet starts with: every device
// may reach every other device on every port. Edit it to restrict access; a policy with
// an error is refused and the previous one stays in force.
{
	// Groups of users, for use in rules below.
	// "groups": {
	//	"group:admins": ["alice@example.com"],
	// },

	// Who may apply each tag to a device.
	// "tagOwners": {
	//	"tag:server": ["group:admins"],
	// },

	// Names for IP addresses and subnets.
	// "hosts": {
	//	"db": "100.64.0.10",
	// },

	// Access rules: everything not allowed here is denied.
	"acls": [
		// Allow all connections.
		{"action": "accept", "src": ["*"], "dst": ["*:*"]},
	],

	// Routes and exit nodes approved automatically.
	// "autoApprovers": {
	//	"routes": {"192.168.0.0/24": ["tag:server"]},
	//	"exitNode": ["tag:server"],
	// },

	// Assertions checked before a policy is accepted.
	// "tests": [
	//	{"src": "alice@example.com", "accept": ["tag:server:22"]},
	// ],
}
"#;
