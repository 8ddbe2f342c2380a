using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Models;

/// <summary>
/// Reads typed fields from a <c>config.json</c> object. A missing required field, a field of the wrong
/// type or an impossible value becomes a one-line <see cref="InputException"/> naming the file and the field.
/// Optional fields fall back to the Hugging Face defaults the caller passes in.
/// </summary>
internal sealed class ConfigReader(JsonObject raw, string source)
{
    public JsonObject Raw => raw;
    public string Source => source;

    public InputException Error(string problem) => new(source, problem);

    /// <summary>True when the field is present and not JSON null.</summary>
    public bool Has(string name) => raw.TryGetPropertyValue(name, out var node) && node is not null;

    public int Int(string name) => OptInt(name) ?? throw Error($"missing required field \"{name}\"");

    public int Positive(string name)
    {
        int v = Int(name);
        return v > 0 ? v : throw Error($"field \"{name}\" must be positive, got {v}");
    }

    public int? OptInt(string name)
    {
        if (!raw.TryGetPropertyValue(name, out var node) || node is null) return null;
        if (node is JsonValue value && value.GetValueKind() == JsonValueKind.Number)
        {
            if (value.TryGetValue<int>(out int i)) return i;
            if (value.TryGetValue<double>(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
        }
        throw Error($"field \"{name}\" must be an integer, got {Describe(node)}");
    }

    public int OptPositive(string name, int fallback)
    {
        int v = OptInt(name) ?? fallback;
        return v > 0 ? v : throw Error($"field \"{name}\" must be positive, got {v}");
    }

    public double Double(string name, double fallback)
    {
        if (!raw.TryGetPropertyValue(name, out var node) || node is null) return fallback;
        if (node is JsonValue value && value.GetValueKind() == JsonValueKind.Number && value.TryGetValue<double>(out double d)) return d;
        throw Error($"field \"{name}\" must be a number, got {Describe(node)}");
    }

    public bool Bool(string name, bool fallback)
    {
        if (!raw.TryGetPropertyValue(name, out var node) || node is null) return fallback;
        return node.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error($"field \"{name}\" must be true or false, got {Describe(node)}"),
        };
    }

    public string String(string name, string fallback) => OptString(name) ?? fallback;

    public string? OptString(string name)
    {
        if (!raw.TryGetPropertyValue(name, out var node) || node is null) return null;
        if (node is JsonValue value && value.GetValueKind() == JsonValueKind.String) return value.GetValue<string>();
        throw Error($"field \"{name}\" must be a string, got {Describe(node)}");
    }

    /// <summary>An optional token id; lists (several EOS ids) yield their first entry.</summary>
    public int? TokenId(string name)
    {
        if (raw.TryGetPropertyValue(name, out var node) && node is JsonArray array)
            return array.Count == 0 ? null : new ConfigReader(new JsonObject { [name] = array[0]?.DeepClone() }, source).OptInt(name);
        return OptInt(name);
    }

    /// <summary>Throws unless <paramref name="ok"/>; for relations between fields.</summary>
    public void Require(bool ok, string problem)
    {
        if (!ok) throw Error(problem);
    }

    private static string Describe(JsonNode node)
    {
        string text = node.ToJsonString();
        return text.Length <= 40 ? text : text[..40] + "…";
    }

    public static string Format(double d) => d.ToString("R", CultureInfo.InvariantCulture);
}
