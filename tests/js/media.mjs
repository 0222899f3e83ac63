// Media as Element Web handles it: alice uploads a PNG with `uploadContent` and sends it as an
// m.image; bob's client turns the mxc:// URI into an authenticated media URL (spec v1.11,
// /_matrix/client/v1/media) and fetches it with his access token, as Element Web's download
// does; he gets the same bytes, and a thumbnail smaller than the image, as the timeline shows it.
import { createHash } from "node:crypto";
import { scenario, user, roomOfTwo, waitForBody, sdk } from "./lib.mjs";
import { gradientPng, pngSize } from "./png.mjs";

const sha256 = (bytes) => createHash("sha256").update(Buffer.from(bytes)).digest("hex");

/** GET `url` with bob's access token (or none): status, content type and bytes. */
async function get(url, token) {
    const res = await fetch(url, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
    return { status: res.status, type: res.headers.get("content-type"), bytes: Buffer.from(await res.arrayBuffer()) };
}

scenario(async (url) => {
    const alice = await user(url, "alice");
    const bob = await user(url, "bob");
    const roomId = await roomOfTwo(alice, bob);

    const png = gradientPng(64, 48);
    const { content_uri: mxc } = await alice.uploadContent(png, { name: "gradient.png", type: "image/png" });
    await alice.sendMessage(roomId, {
        msgtype: sdk.MsgType.Image,
        body: "gradient.png",
        url: mxc,
        info: { mimetype: "image/png", size: png.length, w: 64, h: 48 },
    });

    const image = await waitForBody(bob, roomId, "gradient.png");
    const seen = image.getContent();
    // Element Web uses authenticated media when the server supports spec v1.11.
    const authenticated = await bob.isVersionSupported("v1.11");
    const token = bob.getAccessToken();
    const downloadUrl = bob.mxcUrlToHttp(seen.url, undefined, undefined, undefined, false, true, authenticated);
    const download = await get(downloadUrl, token);
    const anonymous = await get(downloadUrl, null);
    // The timeline's thumbnail (scaled to fit a box) and an avatar-style one (cropped to fill).
    const scaled = await get(bob.mxcUrlToHttp(seen.url, 32, 32, "scale", false, true, authenticated), token);
    const cropped = await get(bob.mxcUrlToHttp(seen.url, 16, 16, "crop", false, true, authenticated), token);
    const config = await bob.getMediaConfig(authenticated);

    return {
        msgtype: seen.msgtype,
        authenticated_media: authenticated,
        download_path: new URL(downloadUrl).pathname.replace(/[^/]+$/, "{mediaId}"),
        uploaded: { sha256: sha256(png), size: png.length },
        downloaded: { status: download.status, type: download.type, sha256: sha256(download.bytes), size: download.bytes.length },
        anonymous_status: anonymous.status,
        thumbnail_scale: { status: scaled.status, type: scaled.type, size: pngSize(scaled.bytes) },
        thumbnail_crop: { status: cropped.status, type: cropped.type, size: pngSize(cropped.bytes) },
        max_upload_size: config["m.upload.size"],
    };
});
