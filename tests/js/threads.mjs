// Threads as Element Web does them: alice writes a message, bob replies to it in a
// thread twice; alice's client shows a thread under the message with both replies and their
// count, and the main timeline keeps only the root. A new device of alice's then opens the
// thread panel (`/threads`) and the thread (`/relations`) and shows the same.
import { scenario, user, login, start, roomOfTwo, waitForBody, live, until, sdk } from "./lib.mjs";

/** Element Web's thread reply: m.thread to the root, falling back to a reply to the latest. */
function threadReply(body, rootId, latestId) {
    return {
        msgtype: "m.text",
        body,
        "m.relates_to": {
            rel_type: sdk.THREAD_RELATION_TYPE.name,
            event_id: rootId,
            is_falling_back: true,
            "m.in_reply_to": { event_id: latestId },
        },
    };
}

/**
 * Opens the thread under `rootId` as Element Web's thread view does before one can write in it
 * (`ThreadView.setupThread`): the room's thread, or a new one around the root, loaded.
 *
 * Replying into a thread the SDK has not loaded, which Element never does, can fail in
 * matrix-js-sdk 37 when the reply's /sync echo arrives before the /send answer: the new thread
 * is still loading (it resets its timeline for that), the echo is not in its timeline when the
 * answer comes, and `updatePendingEvent` throws "called on an event which is not a local echo".
 * A fast server makes that order common; both orders are correct server behaviour.
 */
async function openThread(client, roomId, rootId) {
    const room = client.getRoom(roomId);
    const thread = room.getThread(rootId) ?? room.createThread(rootId, room.findEventById(rootId), [], true);
    return until(`${client.getUserId()}'s thread view to load`, () => thread.initialEventsFetched && thread);
}

/** What a client shows of the thread under `rootId`, once it holds `replies` replies. */
async function threadSeenBy(client, roomId, rootId, replies) {
    const thread = await until(`${client.getUserId()} to see the thread with ${replies} replies`, () => {
        const t = client.getRoom(roomId)?.getThread(rootId);
        return t && t.length === replies && t.events.filter((e) => e.getId() !== rootId).length === replies ? t : null;
    });
    return {
        root: thread.rootEvent?.getContent().body,
        count: thread.length,
        replies: thread.events.filter((e) => e.getId() !== rootId).map((e) => e.getContent().body),
        latest: thread.replyToEvent?.getContent().body,
        senders: [...new Set(thread.events.filter((e) => e.getId() !== rootId).map((e) => e.getSender()))],
    };
}

scenario(async (url) => {
    const alice = await user(url, "alice");
    const bob = await user(url, "bob");
    const roomId = await roomOfTwo(alice, bob);

    const { event_id: rootId } = await alice.sendTextMessage(roomId, "Who is coming to the reunion?");
    await waitForBody(bob, roomId, "Who is coming to the reunion?");
    await openThread(bob, roomId, rootId);
    const { event_id: firstId } = await bob.sendMessage(roomId, rootId, threadReply("I am", rootId, rootId));
    await bob.sendMessage(roomId, rootId, threadReply("And I bring cake", rootId, firstId));

    const live_thread = await threadSeenBy(alice, roomId, rootId, 2);
    const mainTimeline = live(alice, roomId).map((e) => e.getContent().body);
    const threadsInRoom = alice.getRoom(roomId).getThreads().map((t) => t.id);

    // A new device: initial sync of the newest event only, then the thread panel.
    const alice2 = await start(url, await login(url, "alice", "second device"), { initialSyncLimit: 1 });
    const room2 = alice2.getRoom(roomId);
    await room2.createThreadsTimelineSets();
    await room2.fetchRoomThreads();
    const panel = room2.threadsTimelineSets[0]?.getLiveTimeline().getEvents().map((e) => e.getContent().body) ?? [];
    const new_device_thread = await threadSeenBy(alice2, roomId, rootId, 2);
    const bundled = room2.findEventById(rootId)?.getServerAggregatedRelation(sdk.THREAD_RELATION_TYPE.name);

    return {
        server_side_support: ["none", "experimental", "stable"][sdk.Thread.hasServerSideSupport],
        threads_in_room: threadsInRoom.map((id) => (id === rootId ? "root" : id)),
        main_timeline: mainTimeline,
        live_thread,
        new_device_panel: panel,
        new_device_thread,
        new_device_bundled_count: bundled?.count,
    };
});
