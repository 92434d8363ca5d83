"""Prompty's rich input kinds (``thread``, ``image``, ``file``, ``audio``) as chat content.

A ``thread`` input is a conversation: its messages take its place in the rendered chat.
An ``image``, ``file`` or ``audio`` input becomes a content part of the message it is
placed in, in the OpenAI chat format (``{"type": "image_url", ...}``), never text. A message
with such a part carries a list of parts; :func:`parts_text` is the text of such a list
(what diffs and token estimates read).
"""

from __future__ import annotations

from typing import Any

from promptrev.errors import RenderFailed

RICH_KINDS = frozenset({"thread", "image", "file", "audio"})
# The kinds an input or output may declare (Prompty's Property kinds; ``number`` is the
# JSON Schema name some files use for ``float``).
PROPERTY_KINDS = ("string", "integer", "float", "number", "boolean", "array", "object",
                  "union", *sorted(RICH_KINDS))
_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mp3": "mp3",
                  "audio/mpeg": "mp3", "audio/flac": "flac", "audio/ogg": "ogg"}
_PART_TYPES = ("text", "image_url", "input_audio", "file")


def media_part(kind: str, value: Any, name: str) -> dict[str, Any]:
    """The OpenAI content part for the value of a ``kind`` (image, file, audio) input.

    A value is a URL or ``data:`` URI string, a mapping with ``url``/``source`` (and
    ``detail``, ``mediaType``), or already a content part of that type.
    """
    if isinstance(value, dict) and value.get("type") in _PART_TYPES[1:]:
        return dict(value)
    source, media_type, detail = _source(value, name, kind)
    if kind == "image":
        image = {"url": source}
        if detail:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    if kind == "audio":
        data, uri_type = _data_uri(source)
        fmt = _audio_format(media_type or uri_type or "audio/wav")
        return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
    file: dict[str, Any] = {}
    if isinstance(value, dict):
        file.update({k: value[k] for k in ("file_id", "file_data", "filename") if k in value})
    if not file:
        key = "file_data" if source.startswith("data:") else \
            "file_id" if source.startswith("file-") else "url"
        file[key] = source
    return {"type": "file", "file": file}


def _source(value: Any, name: str, kind: str) -> tuple[str, str | None, str | None]:
    if isinstance(value, str) and value:
        return value, None, None
    if isinstance(value, dict):
        source = value.get("url") or value.get("source") or value.get("data") or \
            value.get("file_data") or value.get("file_id")
        if isinstance(source, str) and source:
            media = value.get("mediaType") or value.get("media_type") or value.get("format")
            return source, media if isinstance(media, str) else None, value.get("detail")
    raise RenderFailed(f"input '{name}' is of kind {kind}: its value must be a URL, a data: "
                       "URI, or a mapping with 'url' (and optionally 'detail', 'mediaType'), "
                       f"not {_shown(value)}", details={"input": name, "kind": kind})


def _data_uri(source: str) -> tuple[str, str | None]:
    """(base64 data, media type) of a ``data:`` URI; (source, None) for anything else."""
    if source.startswith("data:") and "," in source:
        head, data = source[5:].split(",", 1)
        return data, head.split(";", 1)[0] or None
    return source, None


def _audio_format(media_type: str) -> str:
    media_type = media_type.lower()
    if media_type in _AUDIO_FORMATS:
        return _AUDIO_FORMATS[media_type]
    return media_type.removeprefix("audio/")


def thread_messages(value: Any, name: str, roles: tuple[str, ...]) -> list[dict[str, Any]]:
    """The messages of a ``thread`` input: ``{"role", "content"[, "name"]}`` dicts.

    A value is a list of messages (or ``{"messages": [...]}``); a message's content is
    text, a list of OpenAI content parts, or Prompty's ``[{kind: text, value}]`` parts.
    """
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad_thread(name, f"not {_shown(value)}")
    out = []
    for i, item in enumerate(value):
        item = item.to_dict() if hasattr(item, "to_dict") else item
        if not isinstance(item, dict) or str(item.get("role", "")).lower() not in roles:
            raise _bad_thread(name, f"message {i + 1} needs a 'role' ({', '.join(roles)})")
        content = _thread_content(item.get("content", ""), name, i)
        message = {"role": str(item["role"]).lower(), "content": content}
        if isinstance(item.get("name"), str) and item["name"]:
            message["name"] = item["name"]
        out.append(message)
    return out


def _thread_content(content: Any, name: str, i: int) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad_thread(name, f"message {i + 1} has content that is neither text nor parts")
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif isinstance(part, dict) and part.get("type") in _PART_TYPES:
            parts.append(dict(part))
        elif isinstance(part, dict) and part.get("kind") == "text":
            parts.append({"type": "text", "text": str(part.get("value", ""))})
        elif isinstance(part, dict) and part.get("kind") in ("image", "file", "audio"):
            value = {"url": part.get("source") or part.get("value"),
                     "mediaType": part.get("mediaType"), "detail": part.get("detail")}
            parts.append(media_part(part["kind"], value, name))
        else:
            raise _bad_thread(name, f"message {i + 1} has a content part of no known type")
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _bad_thread(name: str, why: str) -> RenderFailed:
    return RenderFailed(f"input '{name}' is of kind thread: its value must be a list of "
                        f"messages with 'role' and 'content'; {why}",
                        details={"input": name, "kind": "thread"})


def parts_text(content: str | list[dict[str, Any]]) -> str:
    """The text of a message's content; a media part is shown as ``[image: URL]``."""
    if isinstance(content, str):
        return content
    pieces = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            pieces.append(str(part.get("text", "")))
        elif kind == "image_url":
            pieces.append(f"[image: {_short((part.get('image_url') or {}).get('url'))}]")
        elif kind == "input_audio":
            pieces.append(f"[audio: {(part.get('input_audio') or {}).get('format')}]")
        else:
            file = part.get("file") or {}
            shown = file.get("filename") or file.get("file_id") or file.get("url") or \
                file.get("file_data")
            pieces.append(f"[file: {_short(shown)}]")
    return "\n".join(pieces)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _shown(value: Any) -> str:
    return f"a {type(value).__name__}" if not isinstance(value, str) else "an empty string"
