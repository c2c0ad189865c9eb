package io.github.bigmodel.dispatch.plan;

/**
 * How {@link DeviceMapPlanner#plan} turns a budget into a device map, as the {@code device_map="..."} strings of
 * accelerate and transformers.
 *
 * <ul>
 *   <li>{@link #AUTO} is exactly {@link #BALANCED}: the budget is first balanced over the GPUs
 *       ({@link DeviceMapPlanner#getBalancedMemory}) so every GPU gets a similar share;</li>
 *   <li>{@link #BALANCED_LOW_0} also keeps GPU 0 as empty as possible (room for generation);</li>
 *   <li>{@link #SEQUENTIAL} fills GPU 0, then GPU 1, ..., then cpu, then disk, with the budget as given.</li>
 * </ul>
 *
 * <pre>{@code
 * Strategy s = Strategy.parse("balanced_low_0");   // BALANCED_LOW_0
 * }</pre>
 */
public enum Strategy {
    AUTO("auto"), BALANCED("balanced"), BALANCED_LOW_0("balanced_low_0"), SEQUENTIAL("sequential");

    private final String text;

    Strategy(String text) {
        this.text = text;
    }

    /** The accelerate spelling. */
    public String text() {
        return text;
    }

    /**
     * Parses {@code auto}, {@code balanced}, {@code balanced_low_0} or {@code sequential}.
     *
     * @throws DeviceMapException ({@code ValueError}, accelerate's message) for anything else
     */
    public static Strategy parse(String text) {
        for (Strategy s : values()) {
            if (s.text.equals(text)) {
                return s;
            }
        }
        throw new DeviceMapException("ValueError", "If passing a string for `device_map`, please choose 'auto',"
                + " 'balanced', 'balanced_low_0' or 'sequential'.");
    }

    @Override
    public String toString() {
        return text;
    }
}
