using System.Buffers;
using System.Text;

namespace KeyValueLab.Tokenization;

/// <summary>Tokenizer files read as strict UTF-8: invalid bytes are an input error naming the file and offset, never replaced.</summary>
internal static class Utf8Text
{
    /// <summary>The bytes of a text file, checked to be valid UTF-8.</summary>
    /// <exception cref="InputException">Unreadable, or not valid UTF-8 (the first bad offset named).</exception>
    public static byte[] ReadBytes(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }
        Check(path, bytes);
        return bytes;
    }

    /// <summary>The lines of a text file decoded as strict UTF-8 (a leading BOM dropped).</summary>
    public static string[] ReadLines(string path)
    {
        var bytes = ReadBytes(path);
        int start = bytes.AsSpan().StartsWith(Encoding.UTF8.Preamble) ? 3 : 0;
        using var reader = new StringReader(Encoding.UTF8.GetString(bytes, start, bytes.Length - start));
        var lines = new List<string>();
        while (reader.ReadLine() is { } line) lines.Add(line);  // \n, \r\n or \r, as File.ReadAllLines
        return [.. lines];
    }

    public static void Check(string path, ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return;
        int offset = 0;
        while (offset < bytes.Length)
        {
            var status = Rune.DecodeFromUtf8(bytes[offset..], out _, out int consumed);
            if (status != OperationStatus.Done) break;
            offset += consumed;
        }
        throw new InputException(path, $"not valid UTF-8 (byte 0x{bytes[offset]:X2} at offset {offset})");
    }
}
