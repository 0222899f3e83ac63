// What every scenario shares: a Matrix client set up as Element Web sets up its matrix-js-sdk
// client, registration through user-interactive auth, password login, bounded waits, and the
// one JSON result on stdout.
//
// A scenario is `node tests/js/<name>.mjs <server url>`; tests/it/js_client.rs starts the server,
// runs the script with a timeout and asserts on the JSON it prints. A failure exits non-zero
// with the reason on stderr.
import "./quiet.mjs";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

export { sdk };

// The SDK's own log, on stderr (shown when a test fails): TSUNAGU_JS_LOG=debug for more.
logger.setLevel(process.env.TSUNAGU_JS_LOG ?? "warn");

/** How long one wait may take, in ms. Generous: only a failing scenario waits this long. */
export const WAIT_MS = 60_000;

/** The password of a test account (the same rule as tests/it/common). */
export const password = (name) => `correct horse battery ${name}`;

const clients = [];

/**
 * Runs a scenario: `body(serverUrl)` returns what the scenario saw, which is printed as one JSON
 * line on stdout. Any failure is printed to stderr and exits with status 1.
 */
export function scenario(body) {
    const url = process.argv[2];
    if (!url) {
        console.error("usage: node <scenario>.mjs <server url>");
        process.exit(2);
    }
    body(url).then(
        (result) => {
            stopAll();
            process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
        },
        (err) => {
            console.error("scenario failed:", err?.stack ?? err);
            if (err?.data) console.error("server answered:", JSON.stringify(err.data));
            stopAll();
            process.exit(1);
        },
    );
}

function stopAll() {
    for (const c of clients) c.stopClient();
}

/**
 * Polls `check` until it returns something other than undefined/null/false, and returns that;
 * throws naming `what` after `ms`. Scenarios wait with this, never with a fixed sleep.
 */
export async function until(what, check, ms = WAIT_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
        const got = await check();
        if (got !== undefined && got !== null && got !== false) return got;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
    }
}

/**
 * Registers `name` as Element Web does: `registerRequest` driven by `InteractiveAuth`, which
 * completes the `m.login.dummy` stage itself. Any other stage the server asks for fails.
 * Returns the `/register` answer (`user_id`, `access_token`, `device_id`).
 */
export async function register(baseUrl, name) {
    const anon = sdk.createClient({ baseUrl });
    let refuse;
    const refused = new Promise((_, reject) => (refuse = reject));
    const auth = new sdk.InteractiveAuth({
        matrixClient: anon,
        doRequest: (authDict) =>
            anon.registerRequest({
                username: name,
                password: password(name),
                initial_device_display_name: "matrix-js-sdk registration",
                ...(authDict ? { auth: authDict } : {}),
            }),
        stateUpdated: (stage, status) =>
            refuse(new Error(`registration asked for stage ${stage}: ${JSON.stringify(status)}`)),
        requestEmailToken: () => refuse(new Error("registration asked for an email")),
    });
    return Promise.race([auth.attemptAuth(), refused]);
}

/** Logs `name` in with its password on a new device, as Element Web's login form does. */
export async function login(baseUrl, name, deviceName = "matrix-js-sdk") {
    const anon = sdk.createClient({ baseUrl });
    return anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: name },
        password: password(name),
        initial_device_display_name: deviceName,
    });
}

/**
 * A client for a logged-in session (`user_id`, `access_token`, `device_id`), created and started
 * with the options Element Web's `MatrixClientPeg` uses (timeline support, detached pending
 * events, lazy-loaded members, threads on), synced until PREPARED. `crypto: true` starts the
 * Rust crypto (in memory, as Element does in IndexedDB) before syncing.
 */
export async function start(baseUrl, session, { crypto = false, initialSyncLimit = 20 } = {}) {
    const client = sdk.createClient({
        baseUrl,
        userId: session.user_id,
        accessToken: session.access_token,
        deviceId: session.device_id,
        timelineSupport: true,
        pendingEventOrdering: sdk.PendingEventOrdering.Detached,
    });
    clients.push(client);
    if (crypto) await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            if (state === sdk.SyncState.Prepared) {
                client.off(sdk.ClientEvent.Sync, onSync);
                resolve();
            } else if (state === sdk.SyncState.Error) {
                client.off(sdk.ClientEvent.Sync, onSync);
                reject(new Error(`sync failed for ${session.user_id}: ${data?.error ?? "?"}`));
            }
        };
        client.on(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit, lazyLoadMembers: true, threadSupport: true });
    await withDeadline(`${session.user_id}'s first sync`, prepared);
    return client;
}

/** Registers `name` and logs it in on a second device, which is started (see `start`). */
export async function user(baseUrl, name, opts) {
    await register(baseUrl, name);
    return start(baseUrl, await login(baseUrl, name), opts);
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function withDeadline(what, promise, ms = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The room's live timeline events of this type, oldest first. */
export function live(client, roomId, type = "m.room.message") {
    const room = client.getRoom(roomId);
    if (!room) return [];
    return room.getLiveTimeline().getEvents().filter((e) => e.getType() === type);
}

/** The body of the live message with this body, once `client` has it. */
export function waitForBody(client, roomId, body) {
    return until(`${client.getUserId()} to see "${body}" in ${roomId}`, () =>
        live(client, roomId).find((e) => e.getContent().body === body),
    );
}

/**
 * Alice creates a room and invites bob; bob joins through the invite his sync shows, and alice
 * sees him joined. Returns the room ID. The room is public and unencrypted unless `extra` (more
 * `/createRoom` fields) says otherwise: private rooms are encrypted on Tsunagu by default.
 */
export async function roomOfTwo(alice, bob, extra = {}) {
    const { room_id: roomId } = await alice.createRoom({
        preset: sdk.Preset.PublicChat,
        name: "Tsunagu and js-sdk",
        invite: [bob.getUserId()],
        ...extra,
    });
    await until(`${bob.getUserId()}'s invite to ${roomId}`, () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId);
    await until(`${alice.getUserId()} to see bob joined`, () =>
        alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join",
    );
    return roomId;
}
