namespace KeyValueLab.Tests;

/// <summary>A fact that reads Linux ELF files: reported as skipped, with the reason, on other systems (never as passed).</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "reads libLibTorchSharp.so and libstdc++.so.6, Linux ELF files";
    }
}
