"""Tests for the S3 XML documents: rendering, escaping, dates and DeleteObjects parsing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import unquote, unquote_plus

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import (
    MAX_DELETE_KEYS,
    NS,
    common_prefixes,
    contents,
    document,
    element,
    error_document,
    esc,
    http_date,
    iso8601,
    owner,
    parse,
    parse_delete,
    parse_http_date,
    url_encode,
)

#: Characters XML 1.0 can carry (keys with other control characters cannot be listed in XML).
XML_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xD7FF) | st.sampled_from("\t\n\r"),
    min_size=1,
)


def xml_of(body: bytes | str) -> ET.Element:
    """Parse a document the gateway rendered."""
    return ET.fromstring(body)  # noqa: S314 - our own output


def delete_body(keys: list[str], quiet: str | None = None, namespace: bool = True) -> bytes:
    """A DeleteObjects body naming ``keys``."""
    objects = "".join(f"<Object>{element('Key', k)}</Object>" for k in keys)
    extra = element("Quiet", quiet) if quiet is not None else ""
    xmlns = f' xmlns="{NS}"' if namespace else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Delete{xmlns}>{objects}{extra}</Delete>'.encode()
    )


class ErrorDocumentTests(SynchronousTestCase):
    """The body of an S3 error response."""

    def test_fields(self) -> None:
        """Code, Message, Resource and RequestId are elements of <Error>."""
        root = xml_of(error_document("NoSuchKey", "Gone.", "/b/k", "ABC123"))
        self.assertEqual(root.tag, "Error")
        self.assertEqual(
            [(child.tag, child.text) for child in root],
            [
                ("Code", "NoSuchKey"),
                ("Message", "Gone."),
                ("Resource", "/b/k"),
                ("RequestId", "ABC123"),
            ],
        )

    def test_no_resource(self) -> None:
        """Without a resource there is no <Resource> element."""
        root = xml_of(error_document("AccessDenied", "No.", None, "R"))
        self.assertIsNone(root.find("Resource"))

    def test_escaping(self) -> None:
        """Markup in a message or a key comes back as text."""
        nasty = '<a href="x">&amp;</a>\r'
        root = xml_of(error_document("InvalidArgument", nasty, nasty, "R"))
        self.assertEqual(root.findtext("Message"), nasty)
        self.assertEqual(root.findtext("Resource"), nasty)

    @given(st.text())
    def test_escape_each_character(self, value: str) -> None:
        """Escaping replaces each of ``&<>"`` and CR by its reference, and nothing else."""
        refs = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"}
        self.assertEqual(esc(value), "".join(refs.get(c, c) for c in value))

    def test_declaration(self) -> None:
        """The document starts with an XML declaration in UTF-8."""
        body = error_document("X", "é", None, "R")
        self.assertTrue(body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'))
        self.assertIn("é".encode(), body)


class ElementTests(SynchronousTestCase):
    """Elements and documents."""

    def test_boolean(self) -> None:
        """Booleans are written as S3 writes them."""
        self.assertEqual(element("IsTruncated", True), "<IsTruncated>true</IsTruncated>")
        self.assertEqual(element("IsTruncated", False), "<IsTruncated>false</IsTruncated>")

    def test_none(self) -> None:
        """``None`` gives no element at all."""
        self.assertEqual(element("Marker", None), "")

    def test_empty_string(self) -> None:
        """An empty string gives an empty element."""
        self.assertEqual(element("Prefix", ""), "<Prefix></Prefix>")

    def test_document_namespace(self) -> None:
        """A document's root carries the S3 namespace."""
        root = xml_of(document("ListBucketResult", element("Name", "b")))
        self.assertEqual(root.tag, f"{{{NS}}}ListBucketResult")
        self.assertEqual(root.findtext(f"{{{NS}}}Name"), "b")

    @given(XML_TEXT)
    def test_text_round_trip(self, value: str) -> None:
        """Any XML-representable text survives an element and a parser."""
        self.assertEqual(xml_of(element("Key", value)).text or "", value)


class ListingTests(SynchronousTestCase):
    """The elements of a listing."""

    def parse(self, body: str) -> ET.Element:
        """Parse ``body`` inside a document root."""
        return xml_of(document("ListBucketResult", body))

    def test_contents(self) -> None:
        """A <Contents> has Key, LastModified, quoted ETag, Size and StorageClass."""
        root = self.parse(contents([("a&b", 3, "abc", 1600000000.5)], False, None))
        entry = root.find(f"{{{NS}}}Contents")
        assert entry is not None
        self.assertEqual(
            [(child.tag.split("}")[1], child.text) for child in entry],
            [
                ("Key", "a&b"),
                ("LastModified", "2020-09-13T12:26:40.500Z"),
                ("ETag", '"abc"'),
                ("Size", "3"),
                ("StorageClass", "STANDARD"),
            ],
        )

    def test_contents_owner(self) -> None:
        """An owner element goes into each <Contents> when asked for."""
        root = self.parse(contents([("k", 0, "e", 0.0)], False, owner("id1", "name1")))
        self.assertEqual(root.findtext(f"{{{NS}}}Contents/{{{NS}}}Owner/{{{NS}}}ID"), "id1")
        self.assertEqual(
            root.findtext(f"{{{NS}}}Contents/{{{NS}}}Owner/{{{NS}}}DisplayName"), "name1"
        )

    def test_contents_encoded(self) -> None:
        """With encoding-type=url, keys are URL-encoded."""
        root = self.parse(contents([("a b/é", 0, "e", 0.0)], True, None))
        self.assertEqual(root.findtext(f"{{{NS}}}Contents/{{{NS}}}Key"), "a%20b/%C3%A9")

    def test_contents_text(self) -> None:
        """A <Contents> is written exactly so, its key and ETag escaped."""
        self.assertEqual(
            contents([('a&b<c>"d\r', 3, "abc-2", 1600000000.5)], False, None),
            "<Contents><Key>a&amp;b&lt;c&gt;&quot;d&#13;</Key>"
            "<LastModified>2020-09-13T12:26:40.500Z</LastModified>"
            "<ETag>&quot;abc-2&quot;</ETag><Size>3</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>",
        )

    def test_contents_text_encoded_owner(self) -> None:
        """An encoded key and an owner are written exactly so; half a millisecond rounds up."""
        self.assertEqual(
            contents([("a b/é&", 0, "e", 1.0005)], True, owner("i", "n")),
            "<Contents><Key>a%20b/%C3%A9%26</Key>"
            "<LastModified>1970-01-01T00:00:01.001Z</LastModified>"
            "<ETag>&quot;e&quot;</ETag><Size>0</Size>"
            "<Owner><ID>i</ID><DisplayName>n</DisplayName></Owner>"
            "<StorageClass>STANDARD</StorageClass></Contents>",
        )

    def test_common_prefixes(self) -> None:
        """Each prefix is a <CommonPrefixes><Prefix>, in the order given."""
        root = self.parse(common_prefixes(["a/", "b <c>/"], False))
        self.assertEqual(
            [p.text for p in root.iter(f"{{{NS}}}Prefix")],
            ["a/", "b <c>/"],
        )

    def test_common_prefixes_encoded(self) -> None:
        """With encoding-type=url, prefixes are URL-encoded."""
        self.assertIn("<Prefix>a%20b/</Prefix>", common_prefixes(["a b/"], True))

    def test_empty(self) -> None:
        """No entries give no elements."""
        self.assertEqual((contents([], False, None), common_prefixes([], True)), ("", ""))


class UrlEncodeTests(SynchronousTestCase):
    """``encoding-type=url`` as the SDKs decode it."""

    def test_examples(self) -> None:
        """Spaces become '%20', '+' and '%' are escaped, '/' is kept."""
        self.assertEqual(url_encode("a b+c/d%e"), "a%20b%2Bc/d%25e")

    def test_control_characters(self) -> None:
        """Control characters, which XML cannot carry, are escaped."""
        self.assertEqual(url_encode("a\x01\x00b"), "a%01%00b")

    @given(st.text())
    def test_round_trip(self, key: str) -> None:
        """Both decodings SDKs use (unquote_plus, as botocore; unquote) give back the key."""
        self.assertEqual(unquote_plus(url_encode(key)), key)
        self.assertEqual(unquote(url_encode(key)), key)

    @given(st.text())
    def test_xml_safe(self, key: str) -> None:
        """An encoded key needs no XML escaping."""
        encoded = url_encode(key)
        self.assertTrue(encoded.isascii())
        self.assertFalse(set(encoded) & set("<>&\"'\r\n\t "), encoded)


class DateTests(SynchronousTestCase):
    """Timestamps in XML and in HTTP headers."""

    def test_iso8601(self) -> None:
        """XML timestamps are UTC with milliseconds."""
        self.assertEqual(iso8601(1601370760.904), "2020-09-29T09:12:40.904Z")

    def test_iso8601_whole_second(self) -> None:
        """A whole second has .000."""
        self.assertEqual(iso8601(0), "1970-01-01T00:00:00.000Z")

    def test_iso8601_float_error(self) -> None:
        """A millisecond just below its float value is not lost."""
        self.assertEqual(iso8601(1.001), "1970-01-01T00:00:01.001Z")

    def test_http_date(self) -> None:
        """HTTP dates are RFC 7231 IMF-fixdate in GMT."""
        self.assertEqual(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT")

    def test_parse_formats(self) -> None:
        """The three HTTP date formats parse to the same time."""
        for value in (
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ):
            self.assertEqual(parse_http_date(value), 784111777.0, value)

    def test_parse_offset(self) -> None:
        """A numeric zone is applied."""
        self.assertEqual(parse_http_date("Sun, 06 Nov 1994 09:49:37 +0100"), 784111777.0)

    def test_parse_garbage(self) -> None:
        """Something that is not a date parses to None (the header is then ignored)."""
        self.assertIsNone(parse_http_date("yesterday"))
        self.assertIsNone(parse_http_date(""))

    @given(st.integers(0, 2**33))
    def test_http_round_trip(self, when: int) -> None:
        """Whole seconds survive http_date and parse_http_date."""
        self.assertEqual(parse_http_date(http_date(when)), float(when))


class ParseDeleteTests(SynchronousTestCase):
    """DeleteObjects bodies."""

    def malformed(self, body: bytes) -> S3Error:
        """The error ``parse_delete`` raises for ``body``, which must be MalformedXML (400)."""
        error = self.assertRaises(S3Error, parse_delete, body)
        self.assertEqual((error.code, error.status), ("MalformedXML", 400))
        return error

    def test_keys(self) -> None:
        """The keys come back in document order, not quiet by default."""
        request = parse_delete(delete_body(["b", "a", "a/../b"]))
        self.assertEqual(list(request.keys), ["b", "a", "a/../b"])
        self.assertFalse(request.quiet)

    def test_etags(self) -> None:
        """An <ETag> goes with its key; keys without one have None."""
        body = (
            f'<Delete xmlns="{NS}"><Object><Key>a</Key><ETag>"e1"</ETag></Object>'
            "<Object><Key>b</Key></Object></Delete>"
        ).encode()
        self.assertEqual(list(parse_delete(body).etags), ['"e1"', None])

    def test_quiet(self) -> None:
        """<Quiet>true</Quiet> asks for a quiet answer, whatever its case and spaces."""
        self.assertTrue(parse_delete(delete_body(["k"], "true")).quiet)
        self.assertTrue(parse_delete(delete_body(["k"], " True ")).quiet)

    def test_not_quiet(self) -> None:
        """<Quiet>false</Quiet> and an empty <Quiet> are not quiet."""
        self.assertFalse(parse_delete(delete_body(["k"], "false")).quiet)
        self.assertFalse(parse_delete(delete_body(["k"], "")).quiet)

    def test_without_namespace(self) -> None:
        """A body without the S3 namespace is accepted (s3cmd and others send one)."""
        self.assertEqual(list(parse_delete(delete_body(["k"], namespace=False)).keys), ["k"])

    def test_other_namespace_prefix(self) -> None:
        """A namespace prefix on the elements is accepted."""
        body = f'<s3:Delete xmlns:s3="{NS}"><s3:Object><s3:Key>k</s3:Key></s3:Object></s3:Delete>'
        self.assertEqual(list(parse_delete(body.encode()).keys), ["k"])

    def test_escaped_key(self) -> None:
        """Escaped characters in a key are decoded."""
        self.assertEqual(list(parse_delete(delete_body(['a<&>"b'])).keys), ['a<&>"b'])

    def test_version_id_ignored(self) -> None:
        """Elements other than <Key> in an <Object> do not change the key."""
        body = b"<Delete><Object><Key>k</Key><VersionId>null</VersionId></Object></Delete>"
        self.assertEqual(list(parse_delete(body).keys), ["k"])

    def test_max_keys(self) -> None:
        """1,000 keys are accepted."""
        keys = [f"k{i}" for i in range(MAX_DELETE_KEYS)]
        self.assertEqual(list(parse_delete(delete_body(keys)).keys), keys)

    def test_too_many_keys(self) -> None:
        """1,001 keys are MalformedXML."""
        self.malformed(delete_body([f"k{i}" for i in range(MAX_DELETE_KEYS + 1)]))

    def test_no_object(self) -> None:
        """A Delete naming no object is MalformedXML."""
        self.malformed(b"<Delete><Quiet>true</Quiet></Delete>")

    def test_empty_key(self) -> None:
        """An empty <Key> is MalformedXML."""
        self.malformed(b"<Delete><Object><Key></Key></Object></Delete>")

    def test_missing_key(self) -> None:
        """An <Object> without <Key> is MalformedXML."""
        self.malformed(b"<Delete><Object><VersionId>1</VersionId></Object></Delete>")

    def test_not_well_formed(self) -> None:
        """A body that is not well-formed XML is MalformedXML."""
        self.malformed(b"<Delete><Object><Key>k</Key></Object>")

    def test_empty_body(self) -> None:
        """An empty body is MalformedXML."""
        self.malformed(b"")

    def test_wrong_root(self) -> None:
        """A document whose root is not <Delete> is MalformedXML."""
        self.malformed(b"<Remove><Object><Key>k</Key></Object></Remove>")

    def test_dtd_refused(self) -> None:
        """A DTD is refused before any parsing (no entity expansion)."""
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<Delete><Object><Key>&b;</Key></Object></Delete>"
        )
        error = self.malformed(bomb)
        self.assertIn("DTD", error.message)

    def test_external_entity_refused(self) -> None:
        """An external entity declaration is refused."""
        body = b'<!ENTITY x SYSTEM "file:///etc/passwd"><Delete/>'
        self.malformed(body)

    def test_parse_any_root(self) -> None:
        """``parse`` checks the root's local name whatever its namespace."""
        tree = parse(f'<CompleteMultipartUpload xmlns="{NS}"/>'.encode(), "CompleteMultipartUpload")
        self.assertEqual(tree.tag, f"{{{NS}}}CompleteMultipartUpload")
