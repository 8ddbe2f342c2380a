using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab;

/// <summary>
/// Reading data files strictly: UTF-8 that does not decode is refused (not replaced by U+FFFD without a word), and JSON
/// with a key twice in one object is refused (System.Text.Json would otherwise keep one of them or throw an
/// <see cref="ArgumentException"/> far from the file). Both as an <see cref="InputException"/> naming the file.
/// </summary>
public static class InputText
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Strict JSON: no duplicate keys, no trailing commas, no comments.</summary>
    public static readonly JsonDocumentOptions Json = new() { AllowDuplicateProperties = false, AllowTrailingCommas = false };

    /// <summary>The text of <paramref name="path"/>, which must be UTF-8 (a leading byte-order mark is dropped).</summary>
    public static string ReadAllText(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int start = bytes.AsSpan().StartsWith("\xEF\xBB\xBF"u8) ? 3 : 0;
        try { return Strict.GetString(bytes, start, bytes.Length - start); }
        catch (DecoderFallbackException e)
        {
            int at = start + Math.Max(0, e.Index);
            throw new InputException(path, $"not valid UTF-8 (byte 0x{(e.BytesUnknown is { Length: > 0 } b ? b[0] : bytes[Math.Min(at, bytes.Length - 1)]):X2} at offset {at})");
        }
    }

    /// <summary>Parses JSON text read from <paramref name="path"/>; <paramref name="where"/> ("line 3") prefixes the problem.</summary>
    public static JsonNode? ParseJson(string path, string text, string? where = null)
    {
        try
        {
            var node = JsonNode.Parse(text, documentOptions: Json);
            CheckStrings(node);
            return node;
        }
        catch (InvalidOperationException e)
        {
            // An escaped lone UTF-16 surrogate ("\ud800") is valid JSON syntax but no text; it would throw wherever it is read.
            throw new InputException(path, $"{(where is null ? "" : where + ": ")}a text value is not valid Unicode ({e.Message})", e);
        }
        catch (JsonException e)
        {
            string problem = e.Message.StartsWith("Duplicate property", StringComparison.Ordinal)
                ? $"a key appears twice in one object ({e.Message.Split(" encountered")[0].Replace("Duplicate property", "key", StringComparison.Ordinal)}{Position(e)})"
                : $"not valid JSON: {e.Message}";
            throw new InputException(path, where is null ? problem : $"{where}: {problem}", e);
        }
    }

    private static void CheckStrings(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, child) in o) CheckStrings(child);
                break;
            case JsonArray a:
                foreach (var child in a) CheckStrings(child);
                break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                v.GetValue<string>();
                break;
        }
    }

    private static string Position(JsonException e) => e.LineNumber is long line ? $", line {line + 1}" : "";
}
