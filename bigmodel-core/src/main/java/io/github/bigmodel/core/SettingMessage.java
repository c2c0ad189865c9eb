package io.github.bigmodel.core;

import java.util.Objects;
import java.util.function.UnaryOperator;

/**
 * A message that tells the caller to change one setting, kept in parts so that each audience reads the setting in
 * its own words: a Java caller reads the builder method ({@code DispatchOptions.offloadFolder}), a command-line user
 * the flag ({@code --offload-folder}). The setting's identity is its snake_case name in accelerate / transformers
 * ({@code offload_folder}, {@code max_length}), which every front end can map to its own spelling. The parts around
 * the setting's name are fixed when the error is made, so no rendering rewrites user text (paths, values).
 *
 * <pre>{@code
 * SettingMessage m = new SettingMessage("offload_folder", "DispatchOptions.offloadFolder",
 *         "3 weights must be rewritten: set ", ". First: layers.0.weight");
 * m.toString();                                     // "... set DispatchOptions.offloadFolder. First: ..."
 * m.render(s -> "--" + s.replace('_', '-'));        // "... set --offload-folder. First: ..."
 * }</pre>
 */
public final class SettingMessage {

    private final String setting;
    private final String apiName;
    private final String before;
    private final String after;

    /**
     * @param setting the setting's snake_case identity, e.g. {@code offload_folder}
     * @param apiName how the Java API names it, e.g. {@code DispatchOptions.offloadFolder}
     * @param before the message up to the setting's name
     * @param after the message after it
     */
    public SettingMessage(String setting, String apiName, String before, String after) {
        this.setting = Objects.requireNonNull(setting, "setting");
        this.apiName = Objects.requireNonNull(apiName, "apiName");
        this.before = Objects.requireNonNull(before, "before");
        this.after = Objects.requireNonNull(after, "after");
    }

    /** The setting's snake_case identity. */
    public String setting() {
        return setting;
    }

    /** The message with the setting named by {@code naming} (given the snake_case identity). */
    public String render(UnaryOperator<String> naming) {
        String name = naming.apply(setting);
        return before + (name != null ? name : apiName) + after;
    }

    /** The message as the Java API words it. */
    @Override
    public String toString() {
        return before + apiName + after;
    }

    /**
     * An exception whose fix is one setting. Front ends other than the Java API (the command line) word the message
     * with {@link #message(UnaryOperator)}; {@link Throwable#getMessage()} keeps the API's words.
     *
     * <pre>{@code
     * catch (RuntimeException e) {
     *     String text = e instanceof SettingMessage.Carrier c ? c.message(cliFlags::get) : e.getMessage();
     * }
     * }</pre>
     */
    public interface Carrier {
        /** What to change. */
        SettingMessage settingMessage();

        /** The message with the setting named by {@code naming}; the API's own name where it answers null. */
        default String message(UnaryOperator<String> naming) {
            return settingMessage().render(naming);
        }
    }
}
