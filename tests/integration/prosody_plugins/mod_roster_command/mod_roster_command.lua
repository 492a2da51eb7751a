-- A stand-in for the `subscribe` command of Prosody's community module mod_roster_command, for
-- machines that do not have the module (Debian 12's prosody and prosody-modules packages do not
-- ship it; Jitsi's jitsi-meet-prosody package does). The integration tests use it only when no
-- real mod_roster_command is installed (tests/integration/roster_command.py says where they
-- look), to run the approval commands of the README and of docs/deploy.md as written.
--
--   prosodyctl --config FILE mod_roster_command subscribe USER_JID CONTACT_JID
--
-- makes USER_JID subscribed to CONTACT_JID's presence, the way the real command does for a
-- component (a USER_JID without a localpart, which has no roster of its own): it writes to
-- CONTACT_JID's stored roster, through Prosody's own rostermanager, the request from USER_JID
-- and its approval, so the contact's roster says subscription="from". It writes the storage,
-- not a running server's memory. Nothing else of the real module (subscribe_both, unsubscribe,
-- rename, remove, an account as USER_JID) is here.

if module.host ~= "*" then
	module:log("error", "mod_roster_command is a prosodyctl command; do not load it in Prosody");
	return;
end

local jid_split = require "util.jid".split;
local rostermanager = require "core.rostermanager";
local storagemanager = require "core.storagemanager";
local usermanager = require "core.usermanager";

local function fail(message)
	io.stderr:write("mod_roster_command: ", message, "\n");
	return 1;
end

function module.command(arg)
	local subcommand, user_jid, contact_jid = arg[1], arg[2], arg[3];
	if subcommand ~= "subscribe" or not user_jid or not contact_jid then
		return fail("usage: prosodyctl mod_roster_command subscribe USER_JID CONTACT_JID");
	end
	local user_node, user_host = jid_split(user_jid);
	if user_node then
		return fail("this stand-in only subscribes a component (a JID without a localpart)");
	end
	if not prosody.hosts[user_host] then
		return fail(("%s is not a component of this server"):format(user_jid));
	end
	local contact_node, contact_host = jid_split(contact_jid);
	local host = prosody.hosts[contact_host];
	if not contact_node or not host then
		return fail(("%s is not an account of a host of this server"):format(contact_jid));
	end
	-- prosodyctl makes every host with a null user provider: open the real storage and users.
	if host.users.name == "null" then
		storagemanager.initialize_host(contact_host);
		usermanager.initialize_host(contact_host);
	end
	if not usermanager.user_exists(contact_node, contact_host) then
		return fail(("no account %s"):format(contact_jid));
	end
	rostermanager.set_contact_pending_in(contact_node, contact_host, user_jid);
	rostermanager.subscribed(contact_node, contact_host, user_jid);
	return 0;
end
