// Search and people as Element Web does them: alice searches the room for a word (the search
// dialog: newest first, ten at a time, one event of context either side) and scrolls to the
// older results; then she looks for bob by his display name in the invite dialog (the user
// directory).
import { scenario, user, roomOfTwo, waitForBody, until } from "./lib.mjs";

scenario(async (url) => {
    const alice = await user(url, "alice");
    const bob = await user(url, "bob");
    await bob.setDisplayName("Bobby Tables");
    const roomId = await roomOfTwo(alice, bob);

    const said = ["Morning all", "The coffee machine is fixed", "See you at lunch", "Tea anyone?"];
    for (let i = 1; i <= 11; i++) said.push(`Coffee round ${i}`);
    for (const body of said) await bob.sendTextMessage(roomId, body);
    await waitForBody(alice, roomId, said[said.length - 1]);

    const results = await alice.searchRoomEvents({ term: "coffee", filter: { rooms: [roomId] } });
    const firstPage = results.results.map((r) => r.context.getEvent().getContent().body);
    const pages = [firstPage.length];
    while (results.next_batch) {
        const before = results.results.length;
        await alice.backPaginateRoomEventsSearch(results);
        pages.push(results.results.length - before);
    }
    const hit = results.results.find((r) => r.context.getEvent().getContent().body === "The coffee machine is fixed");
    const around = hit?.context.getTimeline().map((e) => e.getContent().body);
    const tea = await alice.searchRoomEvents({ term: "tea", filter: { rooms: [roomId] } });

    const directory = async (term) =>
        (await alice.searchUserDirectory({ term })).results.map((u) => ({ user_id: u.user_id, display_name: u.display_name }));
    return {
        count: results.count,
        pages,
        first_page: firstPage,
        all: results.results.map((r) => r.context.getEvent().getContent().body),
        context_of_fixed: around,
        context_sender_name: hit?.context.getEvent().sender?.name,
        tea: tea.results.map((r) => r.context.getEvent().getContent().body),
        directory_bobby: await directory("Bobby"),
        directory_tables: await directory("tables"),
        directory_nobody: await directory("Zebedee"),
    };
});
