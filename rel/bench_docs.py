#!/usr/bin/python3
"""Writes the conversion benchmark's documents into a directory (standard library only):
text1.pdf, text100.pdf (Helvetica text, 7-10 pt, ruled table), photo.pdf (a full-page grey
photo-like image), doc.png (1275x1650 screenshot-like), color3.tif (3 pages 1700x2200 RGB),
tiny.rtf and contract.rtf (1 and 12 pages; bench.sh turns them into docx with LibreOffice)."""
import math
import struct
import sys
import zlib


def pdf(pages, w=612, h=792, image=None):
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join("%d 0 R" % (5 + 2 * i) for i in range(len(pages)))
    objs.append(("<< /Type /Pages /Count %d /Kids [%s] >>" % (len(pages), kids)).encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    if image:
        iw, ih, px = image
        data = zlib.compress(px)
        objs.append(("<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                     "/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (iw, ih, len(data))).encode()
                    + data + b"\nendstream")
    else:
        objs.append(b"null")
    for i, c in enumerate(pages):
        objs.append(("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R /Resources "
                     "<< /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> >>" % (w, h, 6 + 2 * i)).encode())
        body = c.encode()
        objs.append(b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs):
        offs.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
    x = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, x)
    return bytes(out)


def text_page(n, w=612, h=792):
    s = ["BT /F1 18 Tf 54 %d Td (Contract page %d) Tj ET" % (h - 60, n)]
    for i in range(44):
        size = 7 if i % 6 == 5 else (8 if i % 3 else 10)
        s.append("BT /F1 %d Tf 54 %d Td (Clause %d.%d: the parties agree that the quick brown fox "
                 "jumps over the lazy dog, 0123456789.) Tj ET" % (size, h - 90 - i * 13, n, i))
    for r in range(8):
        y = h - 690 - r * 10
        s.append("0.6 w 54 %d m %d %d l S" % (y, w - 54, y))
    s.append("54 40 m 250 40 l S BT /F1 8 Tf 54 30 Td (Signature) Tj ET")
    return "\n".join(s)


def photo(w, h):
    px = bytearray()
    for y in range(h):
        fy = y / h
        for x in range(w):
            fx = x / w
            d = math.hypot(fx - 0.5, fy - 0.4)
            v = 0.25 + 0.6 * fx * (1 - fy) + math.sin(d * 40) * 0.15 + (-0.5 if d < 0.15 else 0)
            px.append(max(0, min(255, int(v * 255))))
    return bytes(px)


def screenshot_rgb(w, h):
    rows = []
    for y in range(h):
        row = bytearray()
        for x in range(w):
            bar = (y // 12) % 3 == 0 and 40 < x < w - 40 and (x // 9) % 4 != 0
            chart = y > h // 2 and 100 < x < w - 100 and (x // 60) % 2 == 0 and y > h // 2 + (x % 200)
            row += b"\x14\x14\x14" if bar else (b"\xc8\x28\x28" if chart else b"\xfa\xfa\xfa")
        rows.append(bytes(row))
    return rows


def png(path, w, h, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + r for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def tiff_rgb(path, pages):
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    link = 4
    for w, h, rows in pages:
        data_at = len(out)
        for r in rows:
            out += r
        bps_at = len(out)
        out += struct.pack("<HHH", 8, 8, 8)
        res_at = len(out)
        out += struct.pack("<IIII", 200, 1, 200, 1)
        entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, 2),
                   (273, 4, 1, data_at), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, w * h * 3),
                   (282, 5, 1, res_at), (283, 5, 1, res_at + 8), (296, 3, 1, 2)]
        if len(out) % 2:
            out += b"\x00"
        ifd = len(out)
        struct.pack_into("<I", out, link, ifd)
        out += struct.pack("<H", len(entries))
        for tag, typ, count, value in entries:
            if typ == 3 and count == 1:
                out += struct.pack("<HHIHH", tag, typ, count, value, 0)
            else:
                out += struct.pack("<HHII", tag, typ, count, value)
        link = len(out)
        out += b"\x00\x00\x00\x00"
    with open(path, "wb") as f:
        f.write(out)


def rtf(pages):
    body = []
    for p in range(pages):
        body.append("{\\b\\fs32 Contract section %d}\\par" % (p + 1))
        for i in range(30):
            body.append("\\fs20 Clause %d.%d: the parties agree that the quick brown fox jumps over "
                        "the lazy dog, 0123456789.\\par" % (p + 1, i))
        if p + 1 < pages:
            body.append("\\page")
    return "{\\rtf1\\ansi{\\fonttbl\\f0\\fswiss Liberation Sans;}\\f0 " + "\n".join(body) + "}"


def main(d):
    with open(d + "/text1.pdf", "wb") as f:
        f.write(pdf([text_page(1)]))
    with open(d + "/text100.pdf", "wb") as f:
        f.write(pdf([text_page(n) for n in range(1, 101)]))
    with open(d + "/photo.pdf", "wb") as f:
        f.write(pdf(["q 540 0 0 702 36 45 cm /Im1 Do Q"], image=(800, 1040, photo(800, 1040))))
    png(d + "/doc.png", 1275, 1650, screenshot_rgb(1275, 1650))
    shot = screenshot_rgb(1700, 2200)
    tiff_rgb(d + "/color3.tif", [(1700, 2200, shot)] * 3)
    with open(d + "/tiny.rtf", "w") as f:
        f.write(rtf(1))
    with open(d + "/contract.rtf", "w") as f:
        f.write(rtf(12))


if __name__ == "__main__":
    main(sys.argv[1])
