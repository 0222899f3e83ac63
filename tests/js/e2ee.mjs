// End-to-end encryption as Element Web does it, with js-sdk's Rust crypto (the WASM build of
// matrix-sdk-crypto, in memory): alice and bob in an encrypted room write to each other and each
// reads the other's message in clear; the server only ever saw ciphertext (the Rust test checks
// the stored events).
import { scenario, user, roomOfTwo, until, live, sdk } from "./lib.mjs";

/** The decrypted body of the message `sender` sent, once `client` has decrypted it. */
async function decrypted(client, roomId, sender) {
    return until(`${client.getUserId()} to decrypt ${sender}'s message`, async () => {
        const ev = live(client, roomId, "m.room.message").find((e) => e.getSender() === sender && !e.isDecryptionFailure());
        return ev && { body: ev.getContent().body, was_encrypted: ev.isEncrypted(), wire_type: ev.getWireType() };
    });
}

scenario(async (url) => {
    const alice = await user(url, "alice", { crypto: true });
    const bob = await user(url, "bob", { crypto: true });
    // Element's "private room": encrypted from its creation.
    const roomId = await roomOfTwo(alice, bob, {
        preset: sdk.Preset.PrivateChat,
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    const encrypted = await until("both clients to see the room encrypted", async () =>
        (await alice.getCrypto().isEncryptionEnabledInRoom(roomId)) && (await bob.getCrypto().isEncryptionEnabledInRoom(roomId)),
    );

    // Each sees the other's device (what Element's user info lists as sessions): its keys are
    // uploaded and can be queried, so the room key goes to it.
    const devices = async (client, other) =>
        until(`${client.getUserId()} to see ${other.getUserId()}'s device`, async () => {
            const map = await client.getCrypto().getUserDeviceInfo([other.getUserId()], true);
            const ids = [...(map.get(other.getUserId())?.keys() ?? [])];
            return ids.includes(other.getDeviceId()) && ids.length;
        });
    const bobDevicesSeenByAlice = await devices(alice, bob);
    const aliceDevicesSeenByBob = await devices(bob, alice);

    await alice.sendTextMessage(roomId, "Only Bob can read this");
    const atBob = await decrypted(bob, roomId, alice.getUserId());
    await bob.sendTextMessage(roomId, "And only Alice this");
    const atAlice = await decrypted(alice, roomId, bob.getUserId());

    return {
        room_encrypted: encrypted,
        crypto_version: alice.getCrypto().getVersion(),
        devices_seen: [bobDevicesSeenByAlice, aliceDevicesSeenByBob],
        bob_reads: atBob,
        alice_reads: atAlice,
        room_id: roomId,
    };
});
