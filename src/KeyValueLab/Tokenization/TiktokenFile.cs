using System.Text;

namespace KeyValueLab.Tokenization;

/// <summary>
/// Meta's tiktoken-format vocabulary (Llama 3 <c>tokenizer.model</c>): one line per token,
/// "base64(token bytes) SPACE rank", ranks 0, 1, 2, … in order; the rank is the token id.
/// </summary>
internal static class TiktokenFile
{
    /// <summary>True when the file's first line has the tiktoken shape (a SentencePiece model is binary protobuf).</summary>
    public static bool Looks(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            var head = new byte[256];
            int n = stream.Read(head, 0, head.Length);
            int end = Array.IndexOf(head, (byte)'\n', 0, n);
            if (end <= 0) return false;
            string line = Encoding.ASCII.GetString(head, 0, end).TrimEnd('\r');
            int space = line.IndexOf(' ');
            return space > 0 && line[..space].All(IsBase64Char) && line[(space + 1)..].Length > 0 && line[(space + 1)..].All(char.IsAsciiDigit);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>Token bytes by rank.</summary>
    /// <exception cref="InputException">A line is malformed, a rank is out of order, or a token appears twice.</exception>
    public static byte[][] Read(string path)
    {
        string[] lines;
        try { lines = File.ReadAllLines(path, Encoding.ASCII); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }
        var tokens = new List<byte[]>(lines.Length);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            if (line.Length == 0) continue;
            int space = line.IndexOf(' ');
            if (space <= 0 || line.IndexOf(' ', space + 1) >= 0)
                throw new InputException(path, $"line {i + 1}: expected \"base64 rank\"");
            byte[] bytes;
            try { bytes = Convert.FromBase64String(line[..space]); }
            catch (FormatException) { throw new InputException(path, $"line {i + 1}: \"{line[..space]}\" is not base64"); }
            if (!int.TryParse(line.AsSpan(space + 1), System.Globalization.NumberStyles.None, null, out int rank))
                throw new InputException(path, $"line {i + 1}: rank \"{line[(space + 1)..]}\" is not a non-negative integer");
            if (rank != tokens.Count)
                throw new InputException(path, $"line {i + 1}: rank {rank} where {tokens.Count} was expected (ranks must be 0, 1, 2, ... in order)");
            if (bytes.Length == 0) throw new InputException(path, $"line {i + 1}: empty token");
            if (!seen.Add(line[..space])) throw new InputException(path, $"line {i + 1}: token appears twice");
            tokens.Add(bytes);
        }
        if (tokens.Count == 0) throw new InputException(path, "no tokens (empty tiktoken file)");
        return tokens.ToArray();
    }

    private static bool IsBase64Char(char c) => char.IsAsciiLetterOrDigit(c) || c is '+' or '/' or '=';
}
