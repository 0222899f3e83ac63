// Everyday chat as Element Web does it: two people register, sync, alice invites bob to a room,
// bob joins from the invite, they write to each other, alice edits a message and bob sees the
// new text, bob reacts and alice sees the reaction counted. A new device of bob's then opens a
// link to the edited message (`/context`) and shows the edited text too. Along the way alice
// sees bob typing, and bob's read marker clears his unread badge and shows alice he read it.
import { scenario, user, login, start, roomOfTwo, waitForBody, live, until, sdk } from "./lib.mjs";

scenario(async (url) => {
    const alice = await user(url, "alice");
    const bob = await user(url, "bob");
    const roomId = await roomOfTwo(alice, bob);

    await alice.sendTextMessage(roomId, "Hi Bob, coffee on Friday?");
    await waitForBody(bob, roomId, "Hi Bob, coffee on Friday?");
    await bob.sendTextMessage(roomId, "Gladly, at the usual place");
    await waitForBody(alice, roomId, "Gladly, at the usual place");
    const { event_id: planId } = await alice.sendTextMessage(roomId, "See you at 10");
    const plan = await waitForBody(bob, roomId, "See you at 10");

    // Alice edits "See you at 10" as Element does: fallback body, m.new_content, m.replace.
    await alice.sendMessage(roomId, {
        msgtype: "m.text",
        body: " * See you at 11",
        "m.new_content": { msgtype: "m.text", body: "See you at 11" },
        "m.relates_to": { rel_type: sdk.RelationType.Replace, event_id: planId },
    });
    await until("bob to see the edit applied", () => plan.replacingEvent() && plan.getContent().body === "See you at 11");

    // Bob types (Element sends typing while the composer has text) and alice sees it.
    await bob.sendTyping(roomId, true, 30_000);
    await until("alice to see bob typing", () => alice.getRoom(roomId).getMember(bob.getUserId())?.typing);
    await bob.sendTyping(roomId, false, 30_000);
    await until("alice to see bob stop typing", () => alice.getRoom(roomId).getMember(bob.getUserId())?.typing === false);

    // Bob reads up to the plan as Element's timeline does (read marker and receipt in one call):
    // his unread badge clears, and alice sees his receipt on the message.
    const bobRoom = bob.getRoom(roomId);
    const unreadBefore = bobRoom.getUnreadNotificationCount(sdk.NotificationCountType.Total);
    await bob.setRoomReadMarkers(roomId, planId, plan);
    await until("bob's unread count to clear", () => bobRoom.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 0);
    const readers = await until("alice to see bob's read receipt", () => {
        const room = alice.getRoom(roomId);
        const readers = room.getUsersReadUpTo(room.findEventById(planId));
        return readers.includes(bob.getUserId()) && readers;
    });

    // Bob reacts to the edited message; alice's client counts the reaction on it.
    await bob.sendEvent(roomId, sdk.EventType.Reaction, {
        "m.relates_to": { rel_type: sdk.RelationType.Annotation, event_id: planId, key: "👍" },
    });
    const reactions = await until("alice to see bob's reaction", () => {
        const relations = alice
            .getRoom(roomId)
            .relations.getChildEventsForEvent(planId, sdk.RelationType.Annotation, sdk.EventType.Reaction);
        const sorted = relations?.getSortedAnnotationsByKey();
        return sorted?.length ? sorted.map(([key, events]) => ({ key, senders: [...events].map((e) => e.getSender()) })) : null;
    });

    // Bob on a new device, with only the newest event synced, opens a link to the plan.
    const bob2 = await start(url, await login(url, "bob", "second device"), { initialSyncLimit: 1 });
    const room2 = bob2.getRoom(roomId);
    const timeline = await bob2.getEventTimeline(room2.getUnfilteredTimelineSet(), planId);
    const linked = timeline.getEvents().find((e) => e.getId() === planId);

    const bodies = (client) => live(client, roomId).filter((e) => !e.isRelation()).map((e) => e.getContent().body);
    return {
        alice_sees: bodies(alice),
        bob_sees: bodies(bob),
        bob_sees_edit: { body: plan.getContent().body, edited_by: plan.replacingEvent()?.getSender() },
        alice_sees_reactions: reactions,
        bob_unread: { before: unreadBefore, after: bobRoom.getUnreadNotificationCount(sdk.NotificationCountType.Total) },
        alice_sees_read_by: readers.filter((id) => id !== alice.getUserId()),
        bob_new_device_link: {
            body: linked?.getContent().body,
            edited: Boolean(linked?.replacingEvent()),
            // The edit the server bundled into the event (unsigned m.relations, spec v1.7).
            bundled_edit: linked?.getServerAggregatedRelation(sdk.RelationType.Replace)?.content?.["m.new_content"]?.body,
        },
    };
});
